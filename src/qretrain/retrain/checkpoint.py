"""Per-epoch checkpoints of a retraining run, written atomically, read safely.

A checkpoint records fingerprints of what the run started from (student, teacher,
data, val_data) next to its settings: resuming from another run's checkpoint is
refused instead of returning a mix of two runs' weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from qretrain.errors import QretrainError, QretrainFileError
from qretrain.retrain.config import RetrainConfig
from qretrain.storage.atomic import atomic_path


def save_checkpoint(path, epoch, student: nn.Module, names, tuner, optimizer, history, best,
                    config: RetrainConfig, world_size: int = 1,
                    fingerprints: dict[str, str] | None = None) -> None:  # fmt: skip
    state = student.state_dict()
    payload = {
        "epoch": epoch,
        "config": config.to_dict(),
        "fingerprints": fingerprints or {},
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
                    world_size: int = 1, fingerprints: dict[str, str] | None = None):  # fmt: skip
    """Restore the run; returns (next epoch, history, best or None). Refuses a checkpoint
    of other settings, another student, teacher or data, or one it cannot read."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        _restore(payload, path, student, names, tuner, optimizer, config, world_size,
                 fingerprints or {})  # fmt: skip
    except QretrainError:
        raise
    except Exception as e:  # torch.load and a damaged payload raise many types
        raise QretrainFileError(
            f"checkpoint {str(path)!r} is unreadable or incomplete ({type(e).__name__}: {e}); "
            "remove it to start fresh"
        ) from e
    return payload["epoch"], payload["history"], payload["best"]


def check_same_run(payload: dict, path, config: RetrainConfig,
                   fingerprints: dict[str, str]) -> None:  # fmt: skip
    """Refuse a checkpoint another run wrote: other student, teacher, data or settings."""
    stored = payload.get("fingerprints", {})
    changed = [what for what, digest in fingerprints.items() if stored.get(what) != digest]
    if changed:
        raise QretrainError(
            f"checkpoint {str(path)!r} belongs to another run: its {', '.join(changed)} "
            "differ from this run's; resume only the run that wrote it, or remove it"
        )
    if payload["config"] != config.to_dict():
        raise QretrainError(
            f"checkpoint {str(path)!r} was written with other settings "
            f"({payload['config']}); resume with the same ones or remove it"
        )


def _restore(payload, path, student, names, tuner, optimizer, config, world_size,
             fingerprints: dict[str, str]) -> None:  # fmt: skip
    check_same_run(payload, path, config, fingerprints)
    if payload.get("world_size", 1) != world_size:
        raise QretrainError(
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
