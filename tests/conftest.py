"""Shared fixtures: tiny real models (the package's own zoo at small widths)."""

from __future__ import annotations

import numpy as np
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


@pytest.fixture
def retrain_files(tmp_path):
    """teacher.h5 (tiny VGG-style), student.h5 (its convs at k=4), d.npz (labeled images)."""

    def make(images: int = 64):
        torch.manual_seed(0)
        teacher = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16)
        qretrain.save(teacher, tmp_path / "teacher.h5")
        qretrain.cluster_(teacher, {"rules": [{"type": "Conv2d", "k": 4}]})
        qretrain.save(teacher, tmp_path / "student.h5")
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (images, 28, 28), dtype=np.uint8),
                 y=rng.integers(0, 10, images))  # fmt: skip
        return tmp_path

    return make
