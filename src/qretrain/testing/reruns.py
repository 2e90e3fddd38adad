"""Comparing two runs that should give the same model.

A resumed, spilled or sharded block-wise run equals an uninterrupted one to the bit,
on AVX-512 and AVX2 CPUs alike, with one thread or two. (On AVX2 it did not while
strided 1x1 convolutions trained in channels-last layout: torch 2.14's oneDNN made
them differ from run to run, and crash with one thread; ``qretrain.retrain.layout``.)
"""

from __future__ import annotations

import torch


def assert_same(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    """``a`` equals ``b`` to the bit; the message names the tensor and the largest
    difference."""
    assert torch.equal(a, b), (name, float((a.double() - b.double()).abs().max()))
