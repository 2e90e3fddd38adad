"""Weight clustering: one tensor to a codebook of k <= 256 values plus uint8 indices.

``cluster_``, which applies a plan to a whole model, lives above this package and
``qretrain.plan``, in ``qretrain.apply``. Its names load on first use
(``qretrain._lazy``): ``options`` imports without torch.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.cluster.options": ("MAX_K", "Granularity", "Method"),
    "qretrain.cluster.report": ("ClusterReport", "TensorRecord"),
    "qretrain.cluster.state": ("clusters_of", "codebooks"),
    "qretrain.cluster.tensor": ("ClusteredTensor", "check_values", "cluster_many",
                                "cluster_tensor", "index_bits"),
})  # fmt: skip
