"""Shared fixtures: tiny real models (the package's own zoo at small widths)."""

from __future__ import annotations

import pytest
import torch

import qretrain


@pytest.fixture
def tiny_vgg():
    torch.manual_seed(0)
    return qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=32).eval()


@pytest.fixture
def tiny_resnet():
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:resnet_small", width=4, blocks=1)
    # Non-trivial batch-norm statistics, so that clustering them would show.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture
def images():
    return torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
