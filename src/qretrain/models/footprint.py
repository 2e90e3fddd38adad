"""What one input makes a forward pass hold, estimated without computing.

A model file states its input contract and the keyword arguments of its architecture,
and both set how large a forward pass's activations are: at a 4096-px contract, one
image through a small convolutional net took 2.4 GB. ``activation_bytes`` runs the
forward once on the meta device (shapes only, no memory, milliseconds) and records
the largest output any layer makes. ``FACTOR`` times that, plus the input, estimates
the pass's peak: a layer's input, its output, a normalisation's output and the
workspace of a convolution are alive at once. Measured peaks above the model, one
input at a time: 2.2 (ResNet-18), 3.1 (VGG-16), 3.5 (EfficientNet-Lite0) and 5.2
(qretrain.zoo's resnet_small at 1024 px) times the largest output.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

from qretrain._memory import activation_limit, check_activations

logger = logging.getLogger(__name__)
FACTOR = 4
# Inputs up to this many pixels run in the batches asked for: every contract of the
# zoo (EfficientNet-Lite2's 260 px is the largest) and ImageNet's usual 224-256. Their
# memory is the model's own, and smaller batches cost time (EfficientNet-Lite0 on 2
# cores: 26 images a batch took 20-40% longer than 64). Larger inputs, which a file may
# state up to contract.MAX_SIZE, run in batches whose estimate fits the budget.
ORDINARY_PIXELS = 260 * 260


def activation_bytes(model: nn.Module, shape: tuple[int, ...]) -> int | None:
    """Estimated bytes one input of ``shape`` (C, H, W) makes ``model``'s forward pass
    hold at its busiest (module docstring); None when no layer ran on the meta device.

    A pass that fails on the meta device partway counts the layers before the
    failure, which the real pass would reach too."""
    largest = 0

    def record(module: nn.Module, args, output) -> None:
        nonlocal largest
        for out in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(out, torch.Tensor):
                largest = max(largest, out.numel() * out.element_size())

    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    meta = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}
    param = next(iter(tensors.values()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    example = torch.empty(1, *shape, device="meta", dtype=dtype)
    with _own_hooks_only(model):
        for module in model.modules():
            if next(module.children(), None) is None:
                module.register_forward_hook(record)
        try:
            with torch.no_grad():
                functional_call(model, meta, (example,), strict=False)
        except Exception as e:  # any failure: the estimate is what ran before it
            logger.debug("the meta forward stopped early (%s): estimating from what ran", e)
    if not largest:
        return None
    return FACTOR * largest + example.numel() * example.element_size()


# nn.Module's per-module hook tables (torch 2.x): the pass runs with them emptied.
_HOOK_TABLES = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs")  # fmt: skip


@contextmanager
def _own_hooks_only(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model``'s modules have no forward hooks but those added in
    it, which go with it: the caller's hooks (one counting a teacher's inputs, one
    recording a block's outputs) must not see the estimate's meta tensors."""
    saved = [(m, name, getattr(m, name)) for m in model.modules() for name in _HOOK_TABLES
             if hasattr(m, name)]  # fmt: skip
    for module, name, table in saved:
        setattr(module, name, type(table)())
    try:
        yield
    finally:
        for module, name, table in saved:
            setattr(module, name, table)


def check_one_input(model: nn.Module, shape: tuple[int, ...], what: str) -> int | None:
    """The estimate for one input of ``shape``; QretrainError if it exceeds the
    activation budget (``qretrain._memory``)."""
    needed = activation_bytes(model, shape)
    if needed is not None:
        check_activations(f"{what} on a {' x '.join(map(str, shape))} input", needed)
    return needed


def batch_within_budget(model: nn.Module, shape: tuple[int, ...], batch_size: int,
                        what: str) -> int:  # fmt: skip
    """``batch_size``, or fewer for inputs larger than ORDINARY_PIXELS, so that a
    batch's estimated activations fit the budget; QretrainError if one input alone
    does not."""
    needed = check_one_input(model, shape, what)
    if needed is None or shape[-1] * shape[-2] <= ORDINARY_PIXELS:
        return batch_size
    fits = max(1, activation_limit() // needed)
    if fits < batch_size:
        logger.info("%s: batches of %d, not %d, so that %s inputs' activations (about %d MiB "
                    "each) fit the memory budget", what, fits, batch_size,
                    " x ".join(map(str, shape)), needed >> 20)  # fmt: skip
    return min(batch_size, fits)
