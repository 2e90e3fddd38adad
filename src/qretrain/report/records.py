"""Read a run folder's JSON records; every figure a report shows comes from here."""

from __future__ import annotations

import json
from pathlib import Path

from qretrain._table import human_bytes

RETRAIN_RUNS = ("label_free", "conventional", "far_off")  # run names, in report order
RUN_LABELS = {
    "original": "original",
    "clustered": "clustered",
    "label_free": "label-free",
    "conventional": "conventional",
    "far_off": "label-free, far-off data",
}


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def retrain_records(out: Path) -> dict[str, dict]:
    return {n: r for n in RETRAIN_RUNS if (r := read_json(out / f"{n}.json")) is not None}


def headline_rows(out: Path) -> tuple[list[str], list[list[str]]]:
    """Per model: file size, times smaller than float32, top-1, agreement, retraining time."""
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
