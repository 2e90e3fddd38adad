"""Per-epoch checkpoints of a retraining run, written atomically, read safely.

A checkpoint records fingerprints of what the run started from (student, teacher,
data, val_data) next to its settings: resuming from another run's checkpoint is
refused instead of returning a mix of two runs' weights. A checkpoint may still be
crafted (the fingerprints are not secret), so everything in it is checked against the
run before use: an epoch within the run's, one history entry per epoch, and every
tensor of exactly the shape and dtype it replaces, finite (``copy_`` would broadcast
a (3, 3) tensor into a (4, 1, 3, 3) weight, and NaN weights train on silently).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qretrain.errors import QretrainError, QretrainFileError
from qretrain.retrain.config import RetrainConfig
from qretrain.storage.atomic import atomic_path, nofollow

HISTORY_NUMBERS = ("loss", "seconds", "samples_per_second")  # every epoch entry has them
PAYLOAD_KEYS = ("epoch", "config", "params", "buffers", "codebooks", "optimizer", "history",
                "best")  # fmt: skip


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
    write_payload(path, payload)


def write_payload(path: str | Path, payload: dict) -> None:
    """``torch.save`` into memory, then one atomic write: a full disk is then one line
    (the old checkpoint stands), not a RuntimeError from torch's own file writer."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb", opener=nofollow) as f:
        f.write(buffer.getbuffer())


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
    if not isinstance(payload, dict):
        raise _bad(path, f"holds a {type(payload).__name__}, not a checkpoint")
    check_same_run(payload, path, config, fingerprints)
    _check_contents(payload, path, student, names, tuner, config)
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
    for group in optimizer.param_groups:  # Adam's moments must match their parameters
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if key != "step" and isinstance(value, torch.Tensor):
                    check_tensor(value, param, f"optimizer state {key!r}", path)


def _check_contents(payload: dict, path, student: nn.Module, names, tuner,
                    config: RetrainConfig) -> None:  # fmt: skip
    """Everything ``_restore`` and the loop use, checked against this run."""
    missing = [key for key in PAYLOAD_KEYS if key not in payload]
    if missing:
        raise _bad(path, f"it lacks {', '.join(missing)}")
    epoch = payload.get("epoch")
    if not _is_int(epoch) or not 1 <= epoch <= config.epochs:
        raise _bad(path, f"epoch is {epoch!r}; expected an int from 1 to the run's "
                         f"{config.epochs} epochs")  # fmt: skip
    history = payload.get("history")
    if not isinstance(history, list) or len(history) != epoch:
        raise _bad(path, f"history must list {epoch} epochs")
    for i, entry in enumerate(history):
        monitor = entry.get("monitor") if isinstance(entry, dict) else None
        if (not isinstance(entry, dict) or entry.get("epoch") != i + 1
                or not all(_is_number(entry.get(k)) for k in HISTORY_NUMBERS)
                or not (monitor is None or _is_number(monitor))):  # fmt: skip
            raise _bad(path, f"history entry {i + 1} is not an epoch's record")
    state = student.state_dict()
    buffers = dict(student.named_buffers())
    expected = {**{n: state[n] for n in names}, **buffers}
    if tuner is not None:
        expected.update(tuner.state())
    check_tensors(payload.get("params"), {n: state[n] for n in names}, "params", path)
    check_tensors(payload.get("buffers"), buffers, "buffers", path)
    if tuner is not None:
        check_tensors(payload.get("codebooks"), tuner.state(), "codebooks", path, indices=True)
    best = payload.get("best")
    if best is not None:
        if (not isinstance(best, dict) or not _is_int(best.get("epoch"))
                or not 0 <= best["epoch"] <= epoch
                or not _is_number(best.get("score"))):  # fmt: skip
            raise _bad(path, "best must be None or {epoch, score, state} of an epoch run")
        check_tensors(best.get("state"), expected, "best state", path, indices=True)


def check_tensors(saved: Any, expected: dict[str, torch.Tensor], what: str, path,
                  indices: bool = False) -> None:  # fmt: skip
    """QretrainFileError unless ``saved`` maps exactly ``expected``'s names to finite
    tensors of their shapes and dtypes; ``indices``: a clustered tensor's saved
    ``NAME::indices`` may be there too (the tuner checks their values)."""
    if not isinstance(saved, dict):
        raise _bad(path, f"{what} must map names to tensors")
    extra = [k for k in saved if k not in expected
             and not (indices and isinstance(k, str) and k.endswith("::indices")
                      and f"{k[:-len('::indices')]}::codebook" in expected)]  # fmt: skip
    missing = [k for k in expected if k not in saved and not k.endswith("::indices")]
    if extra or missing:
        raise _bad(path, f"{what} do not fit this model (unexpected: {extra[:3]}, missing: "
                         f"{missing[:3]})")  # fmt: skip
    for name, value in saved.items():
        if name in expected:
            check_tensor(value, expected[name], f"{what} {name!r}", path)
        elif not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
            raise _bad(path, f"{what} {name!r} must be a uint8 tensor")


def check_tensor(value: Any, like: torch.Tensor, what: str, path) -> None:
    """QretrainFileError unless ``value`` is a finite tensor of ``like``'s shape and dtype."""
    if not isinstance(value, torch.Tensor):
        raise _bad(path, f"{what} is a {type(value).__name__}, not a tensor")
    if value.shape != like.shape or value.dtype != like.dtype:
        raise _bad(path, f"{what} is {value.dtype} {tuple(value.shape)}; expected "
                         f"{like.dtype} {tuple(like.shape)}")  # fmt: skip
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise _bad(path, f"{what} holds NaN or infinite values")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or float (not a bool); NaN allowed: a diverged epoch's loss is one."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bad(path, problem: str) -> QretrainFileError:
    return QretrainFileError(f"checkpoint {str(path)!r} is not one this run can resume: "
                             f"{problem}; remove it to start fresh")  # fmt: skip
