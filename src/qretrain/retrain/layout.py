"""Channels-last memory layout for convolutional models while they retrain.

oneDNN (CPU) and cuDNN (GPU) often run 2-D convolutions faster on NHWC tensors.
Measured here (benchmarks/bench_channels_last.py, 2 cores): the VGG-style teacher's
forward pass 1.61x faster, a training epoch about 1.1x, so the one-time pass that
caches the teacher's outputs and the frozen prefix gains most; the ResNet-style
teacher's 16-64-channel convolutions gain nothing (0.92x, within noise). Only strides
change, never values, and the models return to the default layout when retraining ends.

Except in 1x1 convolutions with a stride (a residual network's downsampling path):
those run in the default layout, their input made contiguous on the way in. torch
2.14's oneDNN on an AVX2 CPU corrupts the heap in the backward pass of such a
convolution in channels-last layout with one thread (the process aborts: "corrupted
size vs. prev_size") and, with two, makes training differ from run to run by float
rounding; in the default layout it does neither (tests/retrain/test_layout.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def channels_last(*models: nn.Module | None) -> Iterator[None]:
    """Hold every model that has a 4-D parameter in channels-last layout meanwhile,
    but its strided 1x1 convolutions (module docstring)."""
    convolutional = [m for m in models if m is not None and _has_4d(m)]
    handles = []
    for model in convolutional:
        model.to(memory_format=torch.channels_last)
        for module in model.modules():
            if strided_pointwise(module):
                module.to(memory_format=torch.contiguous_format)
                handles.append(module.register_forward_pre_hook(_contiguous_input))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for model in convolutional:
            model.to(memory_format=torch.contiguous_format)


def strided_pointwise(module: nn.Module) -> bool:
    """A 2-D convolution with a 1x1 kernel and a stride over 1."""
    return isinstance(module, nn.Conv2d) and pointwise_with_stride(module.kernel_size,
                                                                   module.stride)  # fmt: skip


def pointwise_with_stride(kernel: tuple[int, ...], stride: int | tuple[int, ...]) -> bool:
    """Whether a 2-D convolution of this kernel size (kH, kW) and stride must run in the
    default layout (module docstring)."""
    strides = (stride,) if isinstance(stride, int) else tuple(stride)
    return tuple(kernel) == (1, 1) and max(strides) > 1


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


def _has_4d(model: nn.Module) -> bool:
    return any(p.dim() == 4 for p in model.parameters())
