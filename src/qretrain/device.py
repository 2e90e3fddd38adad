"""Device names checked once, where the user gives them; torch is loaded only to
look for a CUDA device, so that ``--device cpu`` and a run config are checked
before anything heavy is imported."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from qretrain.errors import QretrainError

if TYPE_CHECKING:
    import torch

# The names torch.device accepts for the types qretrain runs on.
_NAME = re.compile(r"(?P<type>cpu|cuda)(?::(?:0|[1-9][0-9]*))?")


def device_name(text: object) -> str:
    """The name of a device this machine has (``cpu``, ``cuda``, ``cuda:1``), as
    ``str(parse_device(text))`` gives it, or a QretrainError saying what is wrong."""
    if isinstance(text, str):
        match = _NAME.fullmatch(text)
        if match is None:
            raise QretrainError(f"device must be cpu, cuda or cuda:N; got {text!r}")
        if match["type"] == "cpu":
            return text
    return str(parse_device(text))


def parse_device(text: str | torch.device) -> torch.device:
    """``torch.device(text)`` that exists on this machine, or a QretrainError saying so."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise QretrainError(f"device must be cpu, cuda or cuda:N; got {str(text)!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise QretrainError(f"device {str(text)!r} asked for, but this machine has no "
                                "CUDA device; use --device cpu")  # fmt: skip
        if device.index is not None and device.index >= count:
            raise QretrainError(f"device {str(text)!r}: this machine has {count} CUDA "
                                f"device(s), cuda:0 .. cuda:{count - 1}")  # fmt: skip
    elif device.type != "cpu":
        raise QretrainError(f"device must be cpu, cuda or cuda:N; got {str(text)!r}")
    return device


def fast_bfloat16(device: str | torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions and matrix products natively:
    a CUDA device that supports bfloat16, or a CPU with AVX-512 BF16 or AMX, where
    oneDNN takes them. Elsewhere torch computes bfloat16 by a fallback that is many
    times slower than float32 (EfficientNet-Lite0's forward pass: 6.6x on an AVX2 CPU,
    ``benchmarks/bench_bfloat16.py``)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False
