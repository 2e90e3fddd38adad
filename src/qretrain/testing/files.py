"""Editing a model file's manifest as another tool (or a stranger) would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from qretrain.storage.seal import write_seal


def manifest_of(path: str | Path) -> dict:
    """A file's manifest, read with plain h5py."""
    with h5py.File(path, "r") as f:
        return json.loads(f["manifest"][()].tobytes())


def edit_manifest(path: str | Path, edit: Callable[[dict], None], *, reseal: bool = True) -> None:
    """Apply ``edit`` to the manifest in place; ``reseal`` seals the file again, as a
    stranger crafting a consistent file would (without it the seal catches the edit)."""
    doc = manifest_of(path)
    edit(doc)
    with h5py.File(path, "r+") as f:
        del f["manifest"]
        f.create_dataset("manifest", data=np.frombuffer(json.dumps(doc).encode(), np.uint8))
    if reseal:
        write_seal(path)


def tensor_entry(doc: dict, name: str) -> dict:
    return next(e for e in doc["tensors"] if e["name"] == name)
