"""Supervised training (reference teachers; later conventional retraining)."""

from qretrain.training.loop import TrainConfig, TrainHistory, shift_and_flip, train_classifier

__all__ = ["TrainConfig", "TrainHistory", "shift_and_flip", "train_classifier"]
