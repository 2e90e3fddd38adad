"""The user cache folder: $QRETRAIN_CACHE, else $XDG_CACHE_HOME/qretrain, else ~/.cache/qretrain."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("QRETRAIN_CACHE")
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qretrain"
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
