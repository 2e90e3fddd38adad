"""Per-layer analysis: census of a model and the cluster-alone sweep over k."""

from qretrain.analysis.census import SWEEP_KINDS, LayerCensus, census_table, take_census
from qretrain.analysis.record import Cell, Sweep
from qretrain.analysis.settings import DEFAULT_KS, AnalyzeSettings, Precision, Unit
from qretrain.analysis.sweep import analyze

__all__ = [
    "DEFAULT_KS",
    "SWEEP_KINDS",
    "AnalyzeSettings",
    "Cell",
    "LayerCensus",
    "Precision",
    "Sweep",
    "Unit",
    "analyze",
    "census_table",
    "take_census",
]
