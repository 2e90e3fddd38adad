"""Weight clustering: one tensor to a codebook of k <= 256 values plus uint8 indices.

``cluster_`` applies a plan to a whole model; it lives in ``qretrain.cluster.apply``
and is imported lazily here, since plans themselves use this package's options.
"""

from qretrain.cluster.options import Granularity, Method
from qretrain.cluster.report import ClusterReport, TensorRecord
from qretrain.cluster.state import clusters_of
from qretrain.cluster.tensor import (
    MAX_K,
    ClusteredTensor,
    cluster_and_decode,
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
    "cluster_",
    "cluster_and_decode",
    "cluster_tensor",
    "clusters_of",
    "index_bits",
]


def __getattr__(name: str):
    if name == "cluster_":
        from qretrain.cluster.apply import cluster_

        return cluster_
    raise AttributeError(f"module 'qretrain.cluster' has no attribute {name!r}")
