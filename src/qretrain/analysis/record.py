"""The sweep's record: its cells, baseline and census, in sweep.json and sweep.csv.

A record may come from anyone (``qretrain plan DIR`` on a downloaded folder), so
``Sweep.load`` checks it whole before anything uses it: the JSON itself (nesting
included), every key and type, finite numbers in their ranges, and cells that name
layers of the record's own census. Any problem is one ``QretrainFileError``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from qretrain.analysis.census import LayerCensus, census_table
from qretrain.analysis.settings import GRANULARITIES
from qretrain.errors import QretrainError, QretrainFileError
from qretrain.storage import write_text_atomic

RECORD = "sweep.json"
CSV_FIELDS = ("unit", "layers", "kind", "granularity", "k", "params", "file_bytes", "paper_bytes",
              "top1", "agreement", "kl", "exact", "seconds", "predicted")  # fmt: skip
OPTIONAL_CELL_KEYS = ("predicted", "granularity")  # absent from records made before them


@dataclass
class Cell:
    """One cluster-alone measurement, or prediction (``predicted``: its KL predicted
    from the Fisher information, no agreement or top-1). ``granularity``: its tensors'
    codebooks, one per tensor or one per output channel (``GRANULARITIES``)."""

    unit: str
    layers: str
    kind: str
    k: int
    params: int
    file_bytes: int  # the packed file with only this cell clustered
    paper_bytes: int  # the same in the seed's layout (float32 + gzip)
    top1: float | None  # None without labels, or predicted
    agreement: float | None  # None when predicted
    kl: float
    exact: bool  # k >= distinct values: nothing changed
    seconds: float
    predicted: bool = False
    granularity: str = "tensor"  # one codebook per tensor, per output channel, or of pairs


def cell_label(kind: str, granularity: str) -> str:
    """How progress, summaries and plans name a cell's kind: ``weight``, ``weight per
    channel`` for one codebook per output channel, ``weight in pairs`` for a codebook
    of pairs."""
    if granularity == "tensor":
        return kind
    return f"{kind} in pairs" if granularity == "pairs" else f"{kind} per {granularity}"


@dataclass
class Sweep:
    """The result of ``analyze``: settings, census, baseline and cells."""

    settings: dict[str, Any]
    census: list[LayerCensus]
    baseline: dict[str, Any]  # top1, file_bytes, float32_bytes
    cells: list[Cell] = field(default_factory=list)
    seconds: float = 0.0  # time spent on cells (clustering, passes, sizes), resumed runs added up

    def cell(self, unit: str, kind: str, k: int, granularity: str = "tensor") -> Cell | None:
        for c in self.cells:
            if (c.unit, c.kind, c.k, c.granularity) == (unit, kind, k, granularity):
                return c
        return None

    def units(self) -> list[str]:
        return list(dict.fromkeys(c.unit for c in self.cells))

    def kinds(self) -> list[str]:
        return list(dict.fromkeys(c.kind for c in self.cells))

    @property
    def predicted(self) -> bool:
        """Whether the cells' KL was predicted (``signal: fisher``) rather than measured."""
        return self.settings.get("signal") == "fisher"

    def quality(self, cell: Cell | None, metric: str) -> float:
        """``metric`` ("accuracy" or "agreement") of a cell, or of the baseline when None."""
        if metric in ("agreement", "accuracy") and self.predicted:
            raise QretrainError(
                f"this sweep predicted each cell's KL from the Fisher information and measured "
                f"no {metric}: plan with the kl metric, or sweep with signal 'measured'"
            )
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
    def from_dict(cls, d: dict, where: str = "the sweep record") -> Sweep:
        problems = record_problems(d)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise QretrainFileError(
                f"{where} is not a sweep record qretrain analyze wrote: "
                f"{'; '.join(problems[:3])}{more}; run `qretrain analyze` again"
            )
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
            raw = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise QretrainFileError(f"{str(path)!r} is not a readable sweep record "
                                    f"({type(e).__name__}: {str(e)[:100]}); run `qretrain "
                                    "analyze` again") from None  # fmt: skip
        return cls.from_dict(raw, repr(str(path)))

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
        """Per unit and kind: the smallest k within ``max_drop`` points (of predicted KL,
        millinats, for a predicted sweep), and its saving."""
        if self.predicted:
            baseline = "KL 0 (each cell's KL predicted from the Fisher information)"
            criterion = f"{max_drop:g} millinat(s) of predicted KL"
            unit_name = "millinats"

            def drop(c: Cell) -> float:
                return 1000 * c.kl
        else:
            metric = "accuracy" if self.baseline.get("top1") is not None else "agreement"
            base_q = self.quality(None, metric)
            baseline = f"{metric} {base_q:.2%}"
            criterion = f"{max_drop:g} point(s) of {metric}"
            unit_name = "points"

            def drop(c: Cell) -> float:
                return 100 * (base_q - self.quality(c, metric))

        lines = [
            (
                f"Sweep of {self.settings['model']} on {self.settings['data']}: "
                f"{len(self.cells)} cells in {self.seconds:.0f} s."
            ),
            (
                f"Baseline: {baseline}, packed file {self.baseline['file_bytes']:,} "
                f"bytes (float32 tensors {self.baseline['float32_bytes']:,} bytes)."
            ),
            "",
            (
                f"Smallest k per unit within {criterion} "
                "(clustered alone; drops add up roughly when combined):"
            ),
            "",
            f"| unit | layers | kind | params | smallest k | drop ({unit_name}) | file saving |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        swept = list(dict.fromkeys(c.granularity for c in self.cells))
        for unit in self.units():
            for kind, g in ((kind, g) for kind in self.kinds() for g in swept):
                cells = sorted(
                    (c for c in self.cells if (c.unit, c.kind, c.granularity) == (unit, kind, g)),
                    key=lambda c: c.k,
                )
                if not cells:
                    continue
                label = cell_label(kind, g)
                fit = [c for c in cells if drop(c) <= max_drop]
                if fit:
                    c = fit[0]
                    saving = 1 - c.file_bytes / self.baseline["file_bytes"]
                    lines.append(f"| {unit} | {c.layers} | {label} | {c.params:,} | {c.k} | "
                                 f"{drop(c):.2f} | {saving:.2%} |")  # fmt: skip
                else:
                    lines.append(f"| {unit} | {cells[0].layers} | {label} | {cells[0].params:,} "
                                 "| none | - | - |")  # fmt: skip
        return "\n".join(lines) + "\n"


# What a record's settings hold besides AnalyzeSettings' own keys (checked by it).
SETTINGS_TYPES = {"model": str, "model_sha256": str, "data": str, "images": int, "labeled": bool}
CELL_RANGES = {"k": (1, 256), "params": (0, math.inf), "file_bytes": (1, math.inf),
               "paper_bytes": (1, math.inf), "top1": (0, 1), "agreement": (0, 1),
               "kl": (0, math.inf), "seconds": (0, math.inf)}  # fmt: skip
BASELINE_RANGES = {"file_bytes": (1, math.inf), "float32_bytes": (0, math.inf)}
CENSUS_TYPES = {"layer": int, "module": str, "type": str, "block": str, "output_size": list,
                "bn_module": (str, type(None)), "tensors": dict, "params": dict}  # fmt: skip


def record_problems(d: Any) -> list[str]:
    """Every way ``d`` differs from a record ``analyze`` writes (empty: sound)."""
    if not isinstance(d, dict):
        return [f"the record is a {type(d).__name__}, not a mapping"]
    problems = _keys(d, ("settings", "census", "baseline", "cells"), ("seconds",), "record")
    if problems:
        return problems
    problems += _settings_problems(d["settings"])
    problems += _baseline_problems(d["baseline"])
    if "seconds" in d and not _number_in(d["seconds"], 0, math.inf):
        problems.append(f"seconds must be a number >= 0; got {d['seconds']!r}")
    layers = _census_problems(d["census"], problems)
    if not isinstance(d["cells"], list):
        return problems + ["cells must be a list"]
    predicted = isinstance(d["settings"], dict) and d["settings"].get("signal") == "fisher"
    for i, cell in enumerate(d["cells"]):
        problems += [f"cell {i + 1}: {p}" for p in _cell_problems(cell, layers, predicted)]
    return problems


def _keys(d: dict, required: tuple[str, ...], optional: tuple[str, ...], what: str) -> list[str]:
    missing = [k for k in required if k not in d]
    unknown = [k for k in d if k not in required + optional]
    return ([f"{what} lacks {', '.join(map(repr, missing))}"] if missing else []) + (
        [f"{what} has unknown key(s) {', '.join(map(repr, unknown[:3]))}"] if unknown else []
    )


def _settings_problems(settings: Any) -> list[str]:
    from qretrain.analysis.settings import AnalyzeSettings

    if not isinstance(settings, dict):
        return [f"settings must be a mapping; got {type(settings).__name__}"]
    problems = [f"settings: {k} must be a {t.__name__}" for k, t in SETTINGS_TYPES.items()
                if not isinstance(settings.get(k), t) or (t is int and isinstance(
                    settings.get(k), bool))]  # fmt: skip
    source = settings.get("source")
    if source is not None and not (isinstance(source, dict) and all(
            isinstance(v, (str, int, type(None))) and not isinstance(v, bool)
            for v in source.values())):  # fmt: skip
        problems.append("settings: source must be a mapping of strings and numbers, or null")
    names = {f.name for f in fields(AnalyzeSettings)}
    try:
        AnalyzeSettings.from_dict({k: v for k, v in settings.items() if k in names})
    except QretrainError as e:
        problems.append(f"settings: {str(e).splitlines()[0]}")
    return problems


def _baseline_problems(baseline: Any) -> list[str]:
    if not isinstance(baseline, dict):
        return ["baseline must be a mapping"]
    problems = [f"baseline: {k} must be an int in [{lo}, {hi}]"
                for k, (lo, hi) in BASELINE_RANGES.items()
                if not _int_in(baseline.get(k), lo, hi)]  # fmt: skip
    top1 = baseline.get("top1")
    if top1 is not None and not _number_in(top1, 0, 1):
        problems.append(f"baseline: top1 must be null or a number in [0, 1]; got {top1!r}")
    return problems


def _census_problems(census: Any, problems: list[str]) -> set[int]:
    """Append the census's problems to ``problems``; return its layer numbers."""
    if not isinstance(census, list):
        problems.append("census must be a list")
        return set()
    layers = set()
    for i, row in enumerate(census):
        where = f"census row {i + 1}"
        if not isinstance(row, dict):
            problems.append(f"{where} must be a mapping")
            continue
        bad = [k for k, t in CENSUS_TYPES.items() if not isinstance(row.get(k), t)
               or isinstance(row.get(k), bool)]  # fmt: skip
        bad += _keys(row, tuple(CENSUS_TYPES), (), where)
        if not bad and not (
            all(_int_in(n, 0, math.inf) for n in row["output_size"])
            and all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(t, str) for t in v)
                for k, v in row["tensors"].items()
            )
            and all(_int_in(v, 0, math.inf) for v in row["params"].values())
        ):
            bad.append("output_size, tensors or params")  # fmt: skip
        if bad:
            problems.append(f"{where}: {', '.join(map(str, bad[:3]))} not as analyze writes")
        else:
            layers.add(row["layer"])
    return layers


def _cell_problems(cell: Any, layers: set[int], predicted: bool) -> list[str]:
    """A cell's problems; ``predicted``: the sweep's signal is fisher, so its cells are
    predicted and have no agreement or top-1 (null), and a measured sweep's cells are
    measured (``predicted`` false or absent, as records before it had them)."""
    if not isinstance(cell, dict):
        return ["must be a mapping"]
    names = [f.name for f in fields(Cell)]
    problems = _keys(
        cell, tuple(n for n in names if n not in OPTIONAL_CELL_KEYS), OPTIONAL_CELL_KEYS, "it"
    )
    if problems:
        return problems
    for f in fields(Cell):
        if f.name not in cell:  # an optional key, absent
            continue
        value = cell[f.name]
        lo, hi = CELL_RANGES.get(f.name, (-math.inf, math.inf))
        expected = _cell_type(f.name, f.type, predicted)
        if expected == "None":
            if value is not None:
                problems.append(f"{f.name} is {value!r}; expected null (the sweep predicted "
                                "each cell's KL and measured nothing else)")  # fmt: skip
            continue
        if f.name == "granularity":
            ok = value in GRANULARITIES
            if not ok:
                problems.append(f"granularity is {str(value)[:20]!r}; expected one of "
                                f"{', '.join(GRANULARITIES)}")  # fmt: skip
            continue
        if expected == "str":
            ok = isinstance(value, str)
        elif expected == "bool":
            ok = isinstance(value, bool)
        elif expected == "int":
            ok = _int_in(value, lo, hi)
        else:  # "float" or "float | None"
            ok = _number_in(value, lo, hi) or (value is None and "None" in expected)
        if not ok:
            problems.append(
                f"{f.name} is {value!r}; expected {expected} in [{lo}, {hi}]"
                if expected not in ("str", "bool")
                else f"{f.name} must be a {expected}"
            )
    if not problems and not _layers_within(cell["layers"], layers):
        problems.append(f"layers {cell['layers'][:40]!r} are not layers of the census")
    if not problems and cell.get("predicted", False) != predicted:
        problems.append(f"predicted is {cell.get('predicted', False)}, yet the sweep's signal "
                        f"is {'fisher' if predicted else 'measured'}")  # fmt: skip
    return problems


def _cell_type(name: str, declared: str, predicted: bool) -> str:
    """What a cell's field must hold: as ``Cell`` declares it, but that a measured cell
    has an agreement and a predicted one no agreement or top-1."""
    if name == "agreement":
        return "None" if predicted else "float"
    if name == "top1" and predicted:
        return "None"
    return declared


def _layers_within(text: str, layers: set[int]) -> bool:
    """Whether ``text`` ("13-49", "1,3,5-7") names only ``layers``, checked range by
    range: a crafted "1-999999999" is refused without being expanded."""
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d{1,9})(?:\s*-\s*(\d{1,9}))?\s*", part)
        if not m:
            return False
        lo, hi = int(m[1]), int(m[2] or m[1])
        if lo > hi or hi - lo >= len(layers) or not all(n in layers for n in range(lo, hi + 1)):
            return False
    return True


def _int_in(value: Any, lo: float, hi: float) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _number_in(value: Any, lo: float, hi: float) -> bool:
    """A finite int or float (not a bool) in [lo, hi]: NaN fails every comparison."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and lo <= value <= hi)  # fmt: skip
