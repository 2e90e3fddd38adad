"""Whether a model's input contract fits its architecture, checked without computing.

A file states its architecture and its input contract separately, and a crafted (or
hand-edited) file may pair a one-channel 28-px network with a three-channel 64-px
contract. Every command would then fail deep inside the first forward pass. The
check runs that forward once on the meta device: shapes only, no memory, no
arithmetic, so a large contract costs nothing either.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from qretrain.errors import QretrainFileError
from qretrain.models.specs import get_arch


def check_contract_fits(model: nn.Module, where: str) -> None:
    """QretrainFileError when one image of ``model``'s contract cannot go through it
    to a (1, classes) output; nothing when it has no contract, or when an operation
    has no meta implementation (then no check is possible without computing)."""
    arch = get_arch(model)
    example = arch.example_input() if arch is not None else None
    if example is None:
        return
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    meta = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}
    try:
        with torch.no_grad():
            out = functional_call(model, meta, (example.to("meta"),), strict=False)
    except NotImplementedError:
        return
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise QretrainFileError(
            f"{where}: its input contract ({_shape(example)}) does not fit its architecture "
            f"({str(e).splitlines()[0][:160]}); the file was damaged or edited: use the file "
            "as its writer saved it"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise QretrainFileError(
            f"{where}: one image of its input contract ({_shape(example)}) gives {shape}, not "
            "(1, classes): not a classifier on this input; use the file as its writer saved it"
        )


def _shape(example: torch.Tensor) -> str:
    channels, height, width = example.shape[1:]
    return f"{channels} channel(s) of {height} x {width} pixels"
