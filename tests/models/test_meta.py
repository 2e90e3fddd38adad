"""Building an architecture for its shapes: meta first, small tensors real only when the
builder reads values (torchvision's RegNet)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qretrain.errors import QretrainFileError
from qretrain.models.meta import REAL_BUDGET, SMALL_VALUES, build_on_meta
from qretrain.models.specs import Origin, make_builder


def devices(model: nn.Module) -> dict[str, int]:
    """Values per device type over the model's parameters and buffers."""
    count: dict[str, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        count[t.device.type] = count.get(t.device.type, 0) + t.numel()
    return count


def test_a_builder_that_reads_no_values_builds_wholly_on_meta():
    make = make_builder("torchvision:resnet18", {"num_classes": 10}, Origin.FILE, False)
    assert set(devices(build_on_meta(make, 1000))) == {"meta"}


def test_regnet_builds_with_its_weights_on_meta_and_its_shapes_right():
    make = make_builder("torchvision:regnet_x_400mf", {"num_classes": 10}, Origin.FILE, False)
    with pytest.raises(NotImplementedError, match="meta tensor"):  # why the fallback exists
        with torch.device("meta"):
            make()
    probe = build_on_meta(make, 1000)
    real = make()
    assert {k: v.shape for k, v in probe.state_dict().items()} == \
        {k: v.shape for k, v in real.state_dict().items()}  # fmt: skip
    held = devices(probe)
    assert held["cpu"] <= REAL_BUDGET and held["meta"] > 10 * held["cpu"]


def test_what_the_fallback_allocates_is_bounded_whatever_the_sizes_asked():
    class Reads(nn.Module):  # reads a small tensor's values, then asks for huge ones
        def __init__(self, width: int, copies: int):
            super().__init__()
            widths = (torch.arange(3) * width).tolist()
            self.big = nn.Linear(widths[1], width)  # width x width: meta
            self.small = nn.ParameterList(
                nn.Parameter(torch.zeros(SMALL_VALUES)) for _ in range(copies)
            )

    probe = build_on_meta(lambda: Reads(1 << 20, 2 * REAL_BUDGET // SMALL_VALUES), 10_000)
    held = devices(probe)
    assert probe.big.weight.device.type == "meta"
    assert held["cpu"] <= REAL_BUDGET < held["meta"]


def test_the_fallback_keeps_the_registration_budget():
    def many():
        torch.arange(2).tolist()  # the meta build fails here; the fallback counts too
        return nn.Sequential(*[nn.ReLU() for _ in range(100)])

    with pytest.raises(QretrainFileError, match="registers more than 50"):
        build_on_meta(many, 50)


def test_a_builder_reading_a_large_tensor_still_fails():
    def reads_large():
        return nn.Linear(int(torch.zeros(SMALL_VALUES + 1).sum().item()) + 1, 2)

    with pytest.raises(RuntimeError, match="meta"):
        build_on_meta(reads_large, 100)
