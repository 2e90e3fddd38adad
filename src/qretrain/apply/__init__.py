"""Compression: ``cluster_`` applies a plan to a whole model, in place.

It sits above ``qretrain.cluster`` (one tensor at a time) and ``qretrain.plan``
(which tensors, with which k): plans use the cluster options, and this package
uses both. Its names load on first use (``qretrain._lazy``): ``settings`` imports
without torch.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.apply.model": ("cluster_",),
    "qretrain.apply.settings": ("CompressSettings",),
    "qretrain.apply.stage": ("ClusteredFile", "cluster_and_save"),
})  # fmt: skip
