"""Retraining a clustered model: label-free (the seed's method, or block by block)
or conventional.

Its names load on first use (``qretrain._lazy``): ``config`` imports without torch.
"""

from qretrain._lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "qretrain.retrain.config": ("BNStats", "Loss", "Objective", "RetrainConfig"),
    "qretrain.retrain.loop": ("RetrainResult", "block_checkpoint", "retrain"),
})  # fmt: skip
