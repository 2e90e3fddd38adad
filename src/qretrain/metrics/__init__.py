"""Quality metrics: accuracy with labels, agreement and KL against a reference without.

Its names load on first use (``qretrain._lazy``): ``settings`` imports without torch.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.metrics.quality": ("EvalResult", "agreement", "evaluate", "kl_change", "mean_kl",
                                 "predict", "top1_drop", "topk_accuracy"),
})  # fmt: skip
