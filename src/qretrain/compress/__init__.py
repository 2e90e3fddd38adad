"""Compression: ``cluster_`` applies a plan to a whole model, in place.

It sits above ``qretrain.cluster`` (one tensor at a time) and ``qretrain.plan``
(which tensors, with which k): plans use the cluster options, and this package
uses both.
"""

from qretrain.compress.apply import cluster_
from qretrain.compress.settings import CompressSettings
from qretrain.compress.stage import CompressResult, compress

__all__ = ["CompressResult", "CompressSettings", "cluster_", "compress"]
