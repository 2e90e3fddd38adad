"""Per-layer analysis: census of a model and the cluster-alone sweep over k.

Its names load on first use (``qretrain._lazy``): ``settings`` imports without torch.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.analysis.settings": ("DEFAULT_KS", "SWEEP_KINDS", "AnalyzeSettings", "Precision",
                                   "Unit"),
    "qretrain.analysis.census": ("LayerCensus", "census_table", "take_census"),
    "qretrain.analysis.record": ("Cell", "Sweep"),
    "qretrain.analysis.sweep": ("analyze",),
})  # fmt: skip
