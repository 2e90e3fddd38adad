"""Device names checked once, where the user gives them."""

from __future__ import annotations

import torch

from qretrain.errors import QretrainError


def parse_device(text: str | torch.device) -> torch.device:
    """``torch.device(text)`` that exists on this machine, or a QretrainError saying so."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise QretrainError(
            f"device must be cpu, cuda or cuda:N; got {str(text)!r}"
        ) from None
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
