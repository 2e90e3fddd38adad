"""Build an architecture to read its shapes, allocating (almost) nothing.

A file's architecture is built before its tensors are decoded, and compared with the
shapes the file declares, so that a crafted file cannot make loading allocate what
it merely claims (docs/SECURITY.md). That build runs on the meta device, where
tensors have shapes and no memory.

Some builders read tensor *values* while they build: torchvision's RegNet computes
its stage widths with ``torch.arange(depth) * w_a + w_0`` and calls ``.tolist()``,
which the meta device refuses ("Cannot copy out of meta tensor"). Only for such a
builder, the build runs a second time with small tensors real: every tensor a factory
(``torch.arange``, ``torch.empty``, ...) makes with at most ``SMALL_VALUES`` values
is allocated on the CPU, up to ``REAL_BUDGET`` values in all; larger ones, and any
once the budget is spent, stay on the meta device. The widths RegNet computes are a
few dozen values, its weights stay meta, and what the build may allocate is bounded
whatever the file says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from qretrain.models.specs import registration_budget

logger = logging.getLogger(__name__)
SMALL_VALUES = 4096  # per tensor: a builder's arithmetic on layer counts and widths
REAL_BUDGET = 1 << 20  # values allocated for real in one build, all tensors together
# What reading a meta tensor's data raises: .tolist() / .numpy() ("Cannot copy out of
# meta tensor"), .item() ("cannot be called on meta tensors").
_META_READS = (NotImplementedError, RuntimeError)


def build_on_meta(make: Callable[[], nn.Module], registrations: int) -> nn.Module:
    """``make()`` on the meta device under a budget of ``registrations`` (parameters,
    buffers and submodules); if the builder reads a meta tensor's values, once more
    with small tensors real (module docstring). The second build has its own
    registration budget: the first may have registered some before it failed."""
    try:
        with torch.device("meta"), registration_budget(registrations):
            return make()
    except _META_READS as e:
        if "meta" not in str(e):
            raise
        logger.debug("the architecture reads tensor values while it builds (%s): building "
                     "it again with tensors of up to %d values real", e, SMALL_VALUES)  # fmt: skip
    with _SmallTensorsReal(SMALL_VALUES, REAL_BUDGET), registration_budget(registrations):
        return make()


class _SmallTensorsReal(TorchFunctionMode):
    """Factories without a device make small tensors on the CPU, the rest on meta."""

    def __init__(self, small: int, budget: int):
        super().__init__()
        self.small, self.left = small, budget

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _device_constructors() or kwargs.get("device") is not None:
            return func(*args, **kwargs)
        # Made on meta first: its size is known before anything is allocated.
        shaped = func(*args, **{**kwargs, "device": "meta"})
        if not isinstance(shaped, torch.Tensor) or shaped.numel() > min(self.small, self.left):
            return shaped
        self.left -= shaped.numel()
        return func(*args, **{**kwargs, "device": "cpu"})
