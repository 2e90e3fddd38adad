"""Weight clustering: one tensor to a codebook of k <= 256 values plus uint8 indices.

``cluster_``, which applies a plan to a whole model, lives above this package and
``qretrain.plan``, in ``qretrain.apply``.
"""

from qretrain.cluster.options import Granularity, Method
from qretrain.cluster.report import ClusterReport, TensorRecord
from qretrain.cluster.state import clusters_of, codebooks
from qretrain.cluster.tensor import (
    MAX_K,
    ClusteredTensor,
    check_values,
    cluster_many,
    cluster_tensor,
    index_bits,
)

__all__ = [
    "MAX_K",
    "ClusterReport",
    "ClusteredTensor",
    "Granularity",
    "Method",
    "TensorRecord",
    "check_values",
    "cluster_many",
    "cluster_tensor",
    "clusters_of",
    "codebooks",
    "index_bits",
]

