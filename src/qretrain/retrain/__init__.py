"""Retraining a clustered model: label-free (the seed's method) or conventional."""

from qretrain.retrain.config import BNStats, Loss, RetrainConfig
from qretrain.retrain.loop import RetrainResult, retrain

__all__ = ["BNStats", "Loss", "RetrainConfig", "RetrainResult", "retrain"]
