"""A work folder that holds one run's stages, and only that run's.

Stages trust the records they find (that is how a killed run resumes), so a folder
may be resumed only by the run that made it: ``claim`` records what the run is (its
settings and the fingerprints of its model and data) in ``run.json`` before any
stage runs, and refuses a folder holding another run, or files no run wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qretrain.errors import QretrainError
from qretrain.storage import remove_path, write_text_atomic
from qretrain.storage.atomic import LOCK_NAME

RUN_RECORD = "run.json"  # the run's own: what it is, written before any stage


def claim(folder: Path, identity: dict[str, Any], outputs: list[str], *,
          overwrite: bool = False, what: str = "run") -> bool:  # fmt: skip
    """Make ``folder`` this run's: True when it resumes an earlier run of the same
    ``identity``, False when it starts afresh (``run.json`` written).

    ``identity`` is compared whole (settings, model and data fingerprints); a folder
    holding another identity, or files besides a run's ``outputs``, is refused with
    one line naming the difference. ``overwrite`` removes the ``outputs`` (nothing
    else) and starts afresh.
    """
    recorded = None if overwrite else earlier_run(folder, what)
    if recorded is not None:
        differs = sorted(
            k for k in set(identity) | set(recorded) if identity.get(k) != recorded.get(k)
        )
        if differs:
            raise QretrainError(
                f"{str(folder)!r} holds a {what} run with another {', '.join(differs)}; use another "
                "folder, or pass --overwrite to start over there"
            )
        return True
    for name in outputs:  # no record of an old run survives a fresh start
        remove_path(folder / name)
    remove_path(folder / RUN_RECORD)
    write_text_atomic(folder / RUN_RECORD, json.dumps(identity, indent=2, sort_keys=True))
    return False


def earlier_run(folder: Path, what: str = "run") -> dict[str, Any] | None:
    """The record of the run that made ``folder``, or None for a folder with nothing in
    it (the lock aside); QretrainError for a folder holding files no run wrote."""
    record = folder / RUN_RECORD
    if record.is_file() and not record.is_symlink():
        try:
            recorded = json.loads(record.read_text())
        except (OSError, ValueError, RecursionError):
            recorded = None
        if isinstance(recorded, dict):
            return recorded
    found = (
        sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME) if folder.is_dir() else []
    )
    if found:
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        raise QretrainError(
            f"output folder {str(folder)!r} holds files qretrain {what} did not write "
            f"({', '.join(found[:3])}{more}); use a new or empty folder, or pass --overwrite to "
            f"replace the files a {what} writes there"
        )
    return None
