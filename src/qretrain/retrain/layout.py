"""Channels-last memory layout for convolutional models while they retrain.

oneDNN (CPU) and cuDNN (GPU) often run 2-D convolutions faster on NHWC tensors.
Measured here (benchmarks/bench_channels_last.py, 2 cores): the VGG-style teacher's
forward pass 1.61x faster, a training epoch about 1.1x, so the one-time pass that
caches the teacher's outputs and the frozen prefix gains most; the ResNet-style
teacher's 16-64-channel convolutions gain nothing (0.92x, within noise). Only strides change, never values,
and the models return to the default layout when retraining ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def channels_last(*models: nn.Module | None) -> Iterator[None]:
    """Hold every model that has a 4-D parameter in channels-last layout meanwhile."""
    convolutional = [m for m in models if m is not None and _has_4d(m)]
    for model in convolutional:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for model in convolutional:
            model.to(memory_format=torch.contiguous_format)


def _has_4d(model: nn.Module) -> bool:
    return any(p.dim() == 4 for p in model.parameters())
