"""The sweep: every (unit, kind, k) cell clustered alone, its size and its quality.

A *unit* is a layer or a block (see ``census``); a *kind* is ``weight``, ``bias`` or
``bn``; a cell clusters that kind of tensor in that unit to k values and leaves the
rest of the model as it was. Quality needs no labels: agreement (share of equal
top-1 predictions) and mean KL against the unclustered model, plus top-1 accuracy
when the data has labels.

Cost: each tensor is reduced once and clustered for every k (``cluster_many``); the
forward pass reruns only from the unit on (``Stages``); a cell that leaves every
tensor unchanged (k >= its distinct values) takes the baseline's figures without a
pass. The record is rewritten atomically after every cell, so a killed sweep
resumes where it stopped.
"""

from __future__ import annotations

import copy
import csv
import fnmatch
import io
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from qretrain.analysis.census import SWEEP_KINDS, LayerCensus, census_table, take_census
from qretrain.analysis.staged import Stages
from qretrain.cluster.options import Method, parse_enum
from qretrain.cluster.tensor import MAX_K, cluster_many
from qretrain.errors import QretrainError
from qretrain.metrics.quality import agreement, mean_kl, topk_accuracy
from qretrain.models.fingerprint import model_fingerprint
from qretrain.models.layers import get_tensor
from qretrain.models.specs import get_arch
from qretrain.plan.rules import parse_layers
from qretrain.storage import Layout, entry_file_bytes, save, write_text_atomic

logger = logging.getLogger(__name__)

DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
RECORD = "sweep.json"
CSV_FIELDS = ("unit", "layers", "kind", "k", "params", "file_bytes", "paper_bytes",
              "top1", "agreement", "kl", "exact", "seconds")  # fmt: skip


@dataclass(frozen=True)
class Unit:
    """What one row of cells clusters: a layer or a block of layers."""

    name: str  # layer number ("7") or block name ("block3")
    layers: str  # "7" or "11-15"
    modules: tuple[str, ...]  # conv / linear modules, and their batch norms
    tensors: dict[str, tuple[str, ...]]  # kind -> state-dict names
    params: dict[str, int]  # kind -> parameter count


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


def analyze(
    model: nn.Module,
    data: Dataset,
    out_dir: str | Path | None = None,
    *,
    ks: tuple[int, ...] | list[int] = DEFAULT_KS,
    kinds: tuple[str, ...] | list[str] = ("weight", "bias"),
    granularity: str = "layer",
    layers: str | None = None,
    method: Method | str = Method.KMEANS,
    seed: int = 0,
    batch_size: int = 64,
    precision: str = "float32",
    device: str | torch.device = "cpu",
    model_name: str | None = None,
    source: dict[str, Any] | None = None,
    progress: bool = True,
    plots: bool = True,
) -> Sweep:
    """Sweep every (unit, kind, k) cell of ``model`` over ``data``.

    granularity: "layer" (one unit per conv / linear layer) or "block".
    layers: which units to sweep: layer numbers and ranges ("13-49"), block names
        ("block3") and module-name globs ("_blocks.1*"), comma-separated; all if None.
    precision: "bfloat16" runs the forward passes in bfloat16 (about 3x faster on
        CPUs with AMX or AVX-512 BF16; the baseline then is the bfloat16 model too).
    source: how to load model and data again (the CLI records its arguments, so
        that ``qretrain plan DIR`` can verify a plan without repeating them).
    With ``out_dir``, writes sweep.json / sweep.csv after every cell, resumes from
    them, and finally writes census.txt, summary.md and the plots.
    """
    start = time.perf_counter()
    settings, units, census_rows, work, batches, labels = _prepare(
        model, data, ks, kinds, granularity, layers, method, seed, batch_size, precision,
        device, model_name,
    )  # fmt: skip
    settings["source"] = source
    out = Path(out_dir) if out_dir is not None else None
    sweep = _resume(out, settings)
    done = {(c.unit, c.kind, c.k) for c in sweep.cells} if sweep else set()
    stages = Stages(work, batches)
    base_logits = stages.logits()
    if sweep is None:
        sweep = Sweep(settings, census_rows, _baseline(model, base_logits, labels))
    todo = [
        (u, kind, k)
        for u in units
        for kind in settings["kinds"]
        if u.tensors.get(kind)
        for k in settings["ks"]
        if (u.name, kind, k) not in done
    ]
    raw_bytes: dict[str, int] = {}
    bar = tqdm(total=len(todo), desc="Sweeping", unit="cell", disable=not progress)
    for unit in units:
        mine = [(kind, k) for u, kind, k in todo if u is unit]
        if not mine:
            continue
        stages.advance(stages.boundary_of(set(unit.modules)))
        for kind in dict.fromkeys(kind for kind, _ in mine):
            wanted_ks = [k for kd, k in mine if kd == kind]
            bar.set_postfix_str(f"{unit.name} {kind}")
            for cell in _sweep_kind(model, work, stages, unit, kind, wanted_ks, settings,
                                    base_logits, labels, sweep.baseline, raw_bytes):  # fmt: skip
                sweep.cells.append(cell)
                sweep.seconds += cell.seconds
                if out is not None:
                    sweep.write_record(out)  # after every cell: a killed sweep resumes
                bar.update(1)
    bar.close()
    _order(sweep, units, settings)
    if out is not None:
        sweep.write(out)
        write_text_atomic(out / "census.txt", sweep.census_table() + "\n")
        write_text_atomic(out / "summary.md", sweep.summary())
        if plots:
            from qretrain.analysis.plots import plot_sweep

            plot_sweep(sweep, out)
    logger.info("sweep done in %.1f s", time.perf_counter() - start)
    return sweep


def _prepare(model, data, ks, kinds, granularity, layers, method, seed, batch_size, precision,
             device, model_name):  # fmt: skip
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > MAX_K:
        raise QretrainError(f"ks must be ints in [1, {MAX_K}]; got {ks}")
    kinds = list(dict.fromkeys(kinds))
    bad = [k for k in kinds if k not in SWEEP_KINDS]
    if bad or not kinds:
        raise QretrainError(f"kinds must be some of {', '.join(SWEEP_KINDS)}; got {kinds}")
    if granularity not in ("layer", "block"):
        raise QretrainError(f"granularity must be 'layer' or 'block'; got {granularity!r}")
    if precision not in PRECISIONS:
        raise QretrainError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    method = parse_enum(Method, method, "method")
    if len(data) == 0:
        raise QretrainError("the dataset holds no images")
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    batches, labels = [], []
    for x, y in loader:
        batches.append(x)
        labels.append(y)
    labels = torch.cat(labels)
    dtype = PRECISIONS[precision]
    work = copy.deepcopy(model).eval().to(device, dtype)
    channels_last = batches[0].dim() == 4
    if channels_last:  # ~1.7x faster convolutions on CPU
        work = work.to(memory_format=torch.channels_last)
    batches = [
        x.to(device, dtype, memory_format=torch.channels_last) if channels_last
        else x.to(device, dtype)
        for x in batches
    ]  # fmt: skip
    census_rows = take_census(model, data[0][0].unsqueeze(0))
    units = _units(census_rows, granularity, layers)
    arch = get_arch(model)
    settings = {
        "model": model_name or (arch.spec if arch else type(model).__name__),
        "model_sha256": model_fingerprint(model),
        "data": data.describe() if hasattr(data, "describe") else f"{len(data)} images",
        "images": len(data),
        "labeled": bool((labels >= 0).all()),
        "ks": ks,
        "kinds": kinds,
        "granularity": granularity,
        "layers": layers,
        "method": method.value,
        "seed": seed,
        "precision": precision,
    }
    return settings, units, census_rows, work, batches, labels


def _units(rows: list[LayerCensus], granularity: str, selector: str | None) -> list[Unit]:
    chosen = _select(rows, selector) if selector else rows
    groups: dict[str, list[LayerCensus]] = {}
    for r in chosen:
        groups.setdefault(str(r.layer) if granularity == "layer" else r.block, []).append(r)
    units = []
    for name, members in groups.items():
        tensors: dict[str, tuple[str, ...]] = {}
        params: dict[str, int] = {}
        for r in members:
            for kind, names in r.tensors.items():
                tensors[kind] = tensors.get(kind, ()) + names
                params[kind] = params.get(kind, 0) + r.params[kind]
        modules = tuple(m for r in members for m in (r.module, r.bn_module) if m)
        span = str(members[0].layer) if len(members) == 1 else (
            f"{members[0].layer}-{members[-1].layer}")  # fmt: skip
        units.append(Unit(name, span, modules, tensors, params))
    return units


def _select(rows: list[LayerCensus], selector: str) -> list[LayerCensus]:
    """Rows a selector names: layer numbers/ranges, block names, module-name globs."""
    picked: set[int] = set()
    for part in (p.strip() for p in selector.split(",")):
        if not part:
            continue
        if part[0].isdigit():
            numbers = parse_layers(part)
            hits = {r.layer for r in rows if r.layer in numbers}
        else:
            hits = {r.layer for r in rows if r.block == part or fnmatch.fnmatchcase(r.module, part)}
        if not hits:
            raise QretrainError(
                f"--layers part {part!r} selects no layer; layers run 1-{len(rows)}, blocks "
                f"are {', '.join(dict.fromkeys(r.block for r in rows))}"
            )
        picked |= hits
    return [r for r in rows if r.layer in picked]


def _resume(out: Path | None, settings: dict) -> Sweep | None:
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    if not (out / RECORD).is_file():
        return None
    old = Sweep.load(out)
    differ = [k for k in settings if old.settings.get(k) != settings[k]]
    if differ:
        details = "; ".join(f"{k}: {old.settings.get(k)!r} there, {settings[k]!r} now"
                            for k in differ)  # fmt: skip
        raise QretrainError(
            f"{str(out)!r} holds a sweep with other settings ({details}); "
            "use another folder, or delete it to start over"
        )
    logger.info("resuming the sweep in %s: %d cells done", out, len(old.cells))
    return old


def _baseline(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    float32_bytes = sum(t.numel() * 4 for t in model.state_dict().values()
                        if t.is_floating_point())  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as tmp:
            file_bytes = save(model, Path(tmp) / "base.h5").file_bytes
    except (ValueError, TypeError) as e:  # no recorded architecture: entries alone
        logger.info("cannot save the model (%s); base size from its entries", e)
        file_bytes = sum(entry_file_bytes(n, t) for n, t in model.state_dict().items())
    labeled = bool((labels >= 0).all())
    return {
        "top1": topk_accuracy(logits, labels, 1) if labeled else None,
        "file_bytes": file_bytes,
        "float32_bytes": float32_bytes,
    }


def _sweep_kind(model, work, stages, unit, kind, ks, settings, base_logits, labels, baseline,
                raw_bytes):  # fmt: skip
    """Yield the cells of one unit and kind, one per k in ``ks``."""
    names = unit.tensors[kind]
    method, seed = settings["method"], settings["seed"]
    start = time.perf_counter()
    clustered = {n: cluster_many(get_tensor(model, n), ks, method, "tensor", seed, n)
                 for n in names}  # fmt: skip
    cluster_seconds = (time.perf_counter() - start) / len(ks)
    for n in names:
        if n not in raw_bytes:
            raw_bytes[n] = entry_file_bytes(n, get_tensor(model, n))
    targets = {n: get_tensor(work, n) for n in names}
    originals = {n: t.detach().clone() for n, t in targets.items()}
    labeled = settings["labeled"]
    for k in ks:
        start = time.perf_counter()
        exact = all(torch.equal(clustered[n][k][1], get_tensor(model, n).float()) for n in names)
        if exact:
            logits = base_logits
        else:
            with torch.no_grad():
                for n, t in targets.items():
                    t.copy_(clustered[n][k][1])
                try:
                    logits = stages.logits()
                finally:
                    for n, t in targets.items():
                        t.copy_(originals[n])
        sizes = {}
        for layout in (Layout.PACKED, Layout.PAPER):
            delta = sum(entry_file_bytes(n, clustered[n][k][1], clustered[n][k][0], layout)
                        - raw_bytes[n] for n in names)  # fmt: skip
            sizes[layout] = baseline["file_bytes"] + delta
        yield Cell(
            unit=unit.name,
            layers=unit.layers,
            kind=kind,
            k=k,
            params=unit.params[kind],
            file_bytes=sizes[Layout.PACKED],
            paper_bytes=sizes[Layout.PAPER],
            top1=topk_accuracy(logits, labels, 1) if labeled else None,
            agreement=agreement(logits, base_logits),
            kl=mean_kl(logits, base_logits),
            exact=exact,
            seconds=time.perf_counter() - start + cluster_seconds,
        )


def _order(sweep: Sweep, units: list[Unit], settings: dict) -> None:
    """Cells in unit, kind, k order, whatever order a resumed run added them in."""
    rank = {u.name: i for i, u in enumerate(units)}
    kind_rank = {k: i for i, k in enumerate(settings["kinds"])}
    sweep.cells.sort(key=lambda c: (rank.get(c.unit, len(rank)), kind_rank.get(c.kind, 9), c.k))
