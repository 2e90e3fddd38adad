"""Batch norm stored as one scale and one shift per channel.

In eval mode batch norm computes ``(x - mean) / sqrt(var + eps) * weight + bias``.
Folded, ``weight' = weight / sqrt(var + eps)``, ``bias' = bias - mean * weight'``,
``mean' = 0`` and ``var' = 1 - eps``: the same function up to float rounding, in the
same modules, and ``mean'`` and ``var'`` are constants the file stores as one number
each. Training-mode batch norm normalises by each batch's own statistics, so it is
*not* the same function after folding: retrain a folded model with frozen batch-norm
statistics (the default), which ``retrain`` enforces.
"""

from __future__ import annotations

import torch
from torch import nn


def foldable(module: nn.Module) -> bool:
    return (isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine
            and module.track_running_stats and module.running_mean is not None
            and module.weight.dtype == torch.float32)  # fmt: skip


def is_folded(module: nn.Module) -> bool:
    """Batch norm whose running statistics are those folding leaves (0 and 1 - eps)."""
    if not foldable(module):
        return False
    var = torch.tensor(1 - module.eps, dtype=module.running_var.dtype)
    return bool((module.running_mean == 0).all()) and bool((module.running_var == var).all())


def folded_state(model: nn.Module, state: dict[str, torch.Tensor],
                 keep: set[str]) -> dict[str, torch.Tensor]:  # fmt: skip
    """``state`` (``model``'s state dict) with every foldable batch norm folded, except
    those owning a tensor named in ``keep`` (clustered ones) or already folded."""
    state = dict(state)
    for prefix, module in model.named_modules():
        names = {part: f"{prefix}.{part}" if prefix else part
                 for part in ("weight", "bias", "running_mean", "running_var")}  # fmt: skip
        if not foldable(module) or is_folded(module) or keep & set(names.values()):
            continue
        if not all(name in state for name in names.values()):
            continue
        weight, bias = state[names["weight"]].double(), state[names["bias"]].double()
        mean, var = state[names["running_mean"]].double(), state[names["running_var"]].double()
        scale = weight / torch.sqrt(var + module.eps)
        state[names["weight"]] = scale.float()
        state[names["bias"]] = (bias - mean * scale).float()
        state[names["running_mean"]] = torch.zeros_like(state[names["running_mean"]])
        state[names["running_var"]] = torch.full_like(state[names["running_var"]], 1 - module.eps)
    return state
