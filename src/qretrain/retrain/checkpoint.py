"""Per-epoch checkpoints of a retraining run, written atomically, read safely."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from qretrain.retrain.config import RetrainConfig
from qretrain.storage.atomic import atomic_path


def save_checkpoint(path, epoch, student: nn.Module, names, tuner, optimizer, history, best,
                    config: RetrainConfig, world_size: int = 1) -> None:  # fmt: skip
    state = student.state_dict()
    payload = {
        "epoch": epoch,
        "config": config.to_dict(),
        "world_size": world_size,  # shards and seeds depend on it
        "params": {n: state[n].detach().cpu() for n in names},
        "buffers": {n: b.detach().cpu() for n, b in student.named_buffers()},
        "codebooks": tuner.state() if tuner is not None else {},
        "optimizer": optimizer.state_dict(),
        "history": history,
        "best": best,  # None without val_data
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path, student: nn.Module, names, tuner, optimizer, config: RetrainConfig,
                    world_size: int = 1):  # fmt: skip
    """Restore the run; returns (next epoch, history, best or None). Refuses other settings."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload["config"] != config.to_dict():
        raise ValueError(
            f"checkpoint {str(path)!r} was written with other settings "
            f"({payload['config']}); resume with the same ones or remove it"
        )
    if payload.get("world_size", 1) != world_size:
        raise ValueError(
            f"checkpoint {str(path)!r} was written by {payload.get('world_size', 1)} "
            f"processes; resume with as many (this run has {world_size})"
        )
    state = student.state_dict()
    with torch.no_grad():
        for name in names:
            state[name].copy_(payload["params"][name])
        for name, buffer in student.named_buffers():
            buffer.copy_(payload["buffers"][name])
    if tuner is not None:
        tuner.load_state(payload["codebooks"])
    optimizer.load_state_dict(payload["optimizer"])
    return payload["epoch"], payload["history"], payload["best"]
