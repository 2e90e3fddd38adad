"""Compression: ``cluster_`` applies a plan to a whole model, in place.

It sits above ``qretrain.cluster`` (one tensor at a time) and ``qretrain.plan``
(which tensors, with which k): plans use the cluster options, and this package
uses both.
"""

from qretrain.apply.model import cluster_
from qretrain.apply.settings import CompressSettings
from qretrain.apply.stage import ClusteredFile, cluster_and_save

__all__ = ["ClusteredFile", "CompressSettings", "cluster_", "cluster_and_save"]
