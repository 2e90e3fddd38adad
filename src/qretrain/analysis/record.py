"""The sweep's record: its cells, baseline and census, in sweep.json and sweep.csv."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qretrain.analysis.census import LayerCensus, census_table
from qretrain.errors import QretrainError
from qretrain.storage import write_text_atomic

RECORD = "sweep.json"
CSV_FIELDS = ("unit", "layers", "kind", "k", "params", "file_bytes", "paper_bytes",
              "top1", "agreement", "kl", "exact", "seconds")  # fmt: skip


@dataclass
class Cell:
    """One cluster-alone measurement."""

    unit: str
    layers: str
    kind: str
    k: int
    params: int
    file_bytes: int  # the packed file with only this cell clustered
    paper_bytes: int  # the same in the seed's layout (float32 + gzip)
    top1: float | None  # None without labels
    agreement: float
    kl: float
    exact: bool  # k >= distinct values: nothing changed
    seconds: float


@dataclass
class Sweep:
    """The result of ``analyze``: settings, census, baseline and cells."""

    settings: dict[str, Any]
    census: list[LayerCensus]
    baseline: dict[str, Any]  # top1, file_bytes, float32_bytes
    cells: list[Cell] = field(default_factory=list)
    seconds: float = 0.0  # time spent on cells (clustering, passes, sizes), resumed runs added up

    def cell(self, unit: str, kind: str, k: int) -> Cell | None:
        for c in self.cells:
            if (c.unit, c.kind, c.k) == (unit, kind, k):
                return c
        return None

    def units(self) -> list[str]:
        return list(dict.fromkeys(c.unit for c in self.cells))

    def kinds(self) -> list[str]:
        return list(dict.fromkeys(c.kind for c in self.cells))

    def quality(self, cell: Cell | None, metric: str) -> float:
        """``metric`` ("accuracy" or "agreement") of a cell, or of the baseline when None."""
        if metric == "agreement":
            return 1.0 if cell is None else cell.agreement
        if metric == "accuracy":
            top1 = self.baseline["top1"] if cell is None else cell.top1
            if top1 is None:
                raise QretrainError("the sweep's data had no labels: use the agreement metric")
            return top1
        raise QretrainError(f"metric must be 'accuracy' or 'agreement'; got {metric!r}")

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "census": [r.to_dict() for r in self.census],
            "baseline": self.baseline,
            "seconds": self.seconds,
            "cells": [asdict(c) for c in self.cells],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Sweep:
        return cls(
            settings=d["settings"],
            census=[LayerCensus.from_dict(r) for r in d["census"]],
            baseline=d["baseline"],
            cells=[Cell(**c) for c in d["cells"]],
            seconds=d.get("seconds", 0.0),
        )

    @classmethod
    def load(cls, folder: str | Path) -> Sweep:
        """The sweep recorded in ``folder`` (its sweep.json)."""
        path = Path(folder) / RECORD
        if not path.is_file():
            raise FileNotFoundError(f"{str(folder)!r} holds no {RECORD}: run `qretrain analyze`")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise QretrainError(f"{str(path)!r} is not a readable sweep record: {e}") from e

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for c in self.cells:
            writer.writerow({k: v for k, v in asdict(c).items() if k in CSV_FIELDS})
        return out.getvalue()

    def write_record(self, folder: str | Path) -> None:
        """sweep.json, atomically: what a resumed sweep reads."""
        write_text_atomic(Path(folder) / RECORD, json.dumps(self.to_dict(), indent=1))

    def write(self, folder: str | Path) -> None:
        """sweep.json and sweep.csv, each atomically."""
        self.write_record(folder)
        write_text_atomic(Path(folder) / "sweep.csv", self.csv_text())

    def census_table(self) -> str:
        return census_table(self.census)

    def summary(self, max_drop: float = 1.0) -> str:
        """Per unit and kind: the smallest k within ``max_drop`` points, and its saving."""
        metric = "accuracy" if self.baseline.get("top1") is not None else "agreement"
        base_q = self.quality(None, metric)
        lines = [
            (f"Sweep of {self.settings['model']} on {self.settings['data']}: "
             f"{len(self.cells)} cells in {self.seconds:.0f} s."),
            (f"Baseline: {metric} {base_q:.2%}, packed file {self.baseline['file_bytes']:,} "
             f"bytes (float32 tensors {self.baseline['float32_bytes']:,} bytes)."),
            "",
            (f"Smallest k per unit within {max_drop:g} point(s) of {metric} "
             "(clustered alone; drops add up roughly when combined):"),
            "",
            "| unit | layers | kind | params | smallest k | drop (points) | file saving |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for unit in self.units():
            for kind in self.kinds():
                cells = sorted(
                    (c for c in self.cells if c.unit == unit and c.kind == kind),
                    key=lambda c: c.k,
                )
                if not cells:
                    continue
                fit = [c for c in cells if 100 * (base_q - self.quality(c, metric)) <= max_drop]
                if fit:
                    c = fit[0]
                    drop = 100 * (base_q - self.quality(c, metric))
                    saving = 1 - c.file_bytes / self.baseline["file_bytes"]
                    lines.append(f"| {unit} | {c.layers} | {kind} | {c.params:,} | {c.k} | "
                                 f"{drop:.2f} | {saving:.2%} |")  # fmt: skip
                else:
                    lines.append(f"| {unit} | {cells[0].layers} | {kind} | {cells[0].params:,} "
                                 "| none | - | - |")  # fmt: skip
        return "\n".join(lines) + "\n"
