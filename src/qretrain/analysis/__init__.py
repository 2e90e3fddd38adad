"""Per-layer analysis: census of a model and the cluster-alone sweep over k."""

from qretrain.analysis.census import SWEEP_KINDS, LayerCensus, census_table, take_census
from qretrain.analysis.sweep import DEFAULT_KS, Cell, Sweep, analyze

__all__ = [
    "DEFAULT_KS",
    "SWEEP_KINDS",
    "Cell",
    "LayerCensus",
    "Sweep",
    "analyze",
    "census_table",
    "take_census",
]
