"""Quality metrics: accuracy with labels, agreement and KL against a reference without."""

from qretrain.metrics.quality import (
    EvalResult,
    agreement,
    evaluate,
    kl_change,
    mean_kl,
    predict,
    top1_drop,
    topk_accuracy,
)

__all__ = ["EvalResult", "agreement", "evaluate", "kl_change", "mean_kl", "predict", "top1_drop",
           "topk_accuracy"]
