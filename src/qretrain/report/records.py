"""Read a run folder's JSON records; every figure a report shows comes from here.

A run folder may come from anyone: its records are read only as regular files inside
it (``qretrain.storage.inside``), and a record that does not hold what a run writes
is one ``QretrainFileError``, not whatever exception reading it happened to raise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from qretrain._table import human_bytes
from qretrain.errors import QretrainError, QretrainFileError
from qretrain.storage.inside import json_inside

RETRAIN_RUNS = ("label_free", "conventional", "far_off")  # run names, in report order
RUN_LABELS = {
    "original": "original",
    "clustered": "clustered",
    "label_free": "label-free",
    "conventional": "conventional",
    "far_off": "label-free, far-off data",
}


def read_json(path: Path) -> dict | None:
    """The JSON record at ``path`` (a regular file, never a link), or None if absent."""
    return json_inside(path.parent, path.name)


@contextlib.contextmanager
def records_of(out: Path) -> Iterator[None]:
    """Turn what reading ``out``'s records raises, when one of them lacks a key, holds
    another type or an impossible value, into one QretrainFileError naming the folder."""
    try:
        yield
    except QretrainError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError,
            RecursionError) as e:  # fmt: skip
        raise QretrainFileError(
            f"run folder {str(out)!r} holds a record that is not what qretrain run writes "
            f"({type(e).__name__}: {str(e)[:120]}); run the config again with --overwrite "
            "to write it anew"
        ) from e


def retrain_records(out: Path) -> dict[str, dict]:
    return {n: r for n in RETRAIN_RUNS if (r := read_json(out / f"{n}.json")) is not None}


def headline_rows(out: Path) -> tuple[list[str], list[list[str]]]:
    """Per model: file size, times smaller than float32, top-1, agreement, retraining time."""
    with records_of(out):
        return _headline_rows(out)


def _headline_rows(out: Path) -> tuple[list[str], list[list[str]]]:
    evaluation = read_json(out / "evaluate.json")
    compress = read_json(out / "compress.json")
    if evaluation is None or compress is None:
        raise FileNotFoundError(f"{str(out)!r} holds no finished run (evaluate.json missing)")
    runs = retrain_records(out)
    float32 = compress["float32_bytes"]
    headers = ["model", "file", "vs float32", "top-1", "drop [95%]", "agreement", "retraining"]
    rows = []
    for name, m in evaluation["models"].items():
        top1 = f"{m['top1']:.2%}" if m["top1"] is not None else "-"
        drop = "-"
        if m.get("top1_drop") is not None and name != "original":
            low, high = m["drop_95"]
            drop = f"{m['top1_drop']:.1f} [{low:.1f}, {high:.1f}]"
        seconds = f"{runs[name]['wall_seconds']:.1f} s" if name in runs else "-"
        rows.append([m["label"], human_bytes(m["file_bytes"]),
                     f"{float32 / m['file_bytes']:.2f}x", top1, drop, f"{m['agreement']:.2%}",
                     seconds])  # fmt: skip
    return headers, rows
