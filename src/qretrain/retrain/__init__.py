"""Retraining a clustered model: label-free (the seed's method, or block by block)
or conventional."""

from qretrain.retrain.config import BNStats, Loss, Objective, RetrainConfig
from qretrain.retrain.loop import RetrainResult, block_checkpoint, retrain

__all__ = ["BNStats", "Loss", "Objective", "RetrainConfig", "RetrainResult", "block_checkpoint",
           "retrain"]  # fmt: skip
