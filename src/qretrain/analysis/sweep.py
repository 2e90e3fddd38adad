"""The sweep: every (unit, kind, k) cell clustered alone, its size and its quality.

A *unit* is a layer or a block (see ``census``); a *kind* is ``weight``, ``bias`` or
``bn``; a cell clusters that kind of tensor in that unit to k values and leaves the
rest of the model as it was. With ``granularities: [tensor, channel]`` a unit and
kind whose tensors have output channels is also swept with one codebook of k values
per output channel (more bytes of codebook, less error), at each k whose codebooks
stay small beside the indices (``_channels_pay``); with ``pairs``, where every tensor's
output channels pair up within a group, with one codebook of k pairs; so that a planner can choose
between them layer by layer at their bytes. Quality needs no labels: agreement (share of equal
top-1 predictions) and mean KL against the unclustered model, plus top-1 accuracy
when the data has labels.

Cost: each tensor is reduced once and clustered for every k (``cluster_many``'s unchecked core); the
forward pass reruns only from the unit on (``Stages``); a cell that leaves every
tensor unchanged (k >= its distinct values) takes the baseline's figures without a
pass. The record is rewritten atomically after every cell, so a killed sweep
resumes where it stopped.

With ``signal: fisher`` no cell runs a pass: each cell's KL is predicted from its
clustering error weighted by the diagonal Fisher information, estimated once over
the images (``qretrain.analysis.fisher``); the cells are the same, marked
``predicted``, without agreement or top-1.

Under ``torchrun`` (``qretrain.distributed``) cell i of those left to do goes to rank
i % world_size. Every rank holds all the sweep images and walks the same units, so a
cell is measured on whichever rank exactly as one process measures it; after each
unit the ranks gather its cells, and rank 0 (the only one that reads or writes the
folder) records them in the order one process would: the same record, bit for bit,
but for the seconds. A killed run resumes from the last whole unit. With ``signal:
fisher`` every rank predicts every cell (its passes are few) and rank 0 writes them.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.utils.data import Dataset

from qretrain.analysis.census import LayerCensus, take_census
from qretrain.analysis.fisher import predicted_kls
from qretrain.analysis.record import RECORD, Cell, Sweep, cell_label
from qretrain.analysis.settings import AnalyzeSettings, Signal, Unit
from qretrain.analysis.staged import Stages
from qretrain.cluster.options import Granularity
from qretrain.cluster.tensor import _cluster_many, check_values, index_bits, pairs_fit
from qretrain.data.batches import image_batches
from qretrain.device import fast_bfloat16
from qretrain.distributed import Ranks
from qretrain.errors import QretrainError
from qretrain.metrics.quality import agreement, mean_kl, topk_accuracy
from qretrain.models.fingerprint import model_fingerprint
from qretrain.models.layers import get_tensor, type_names
from qretrain.models.selector import Selector
from qretrain.models.specs import get_arch
from qretrain.progress import Progress
from qretrain.storage import Layout, entry_file_bytes, file_bytes, write_text_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepUnit:
    """What one row of cells clusters: a layer or a block of layers."""

    name: str  # layer number ("7") or block name ("block3")
    layers: str  # "7" or "11-15"
    modules: tuple[str, ...]  # conv / linear modules, and their batch norms
    tensors: dict[str, tuple[str, ...]]  # kind -> state-dict names
    params: dict[str, int]  # kind -> parameter count


def analyze(
    model: nn.Module,
    data: Dataset,
    out_dir: str | Path | None = None,
    settings: AnalyzeSettings = AnalyzeSettings(),
    *,
    device: str | torch.device = "cpu",
    model_name: str | None = None,
    source: dict[str, Any] | None = None,
    progress: bool = True,
    plots: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Sweep:
    """Sweep every (unit, kind, k) cell of ``model`` over ``data`` (see AnalyzeSettings).

    source: how to load model and data again (the CLI records its arguments, so
        that ``qretrain plan DIR`` can verify a plan without repeating them).
    With ``out_dir``, writes sweep.json / sweep.csv after every cell (with ``signal:
    fisher``, once all are predicted), resumes from them, and finally writes
    census.txt, summary.md and the plots.
    ``rank``/``world_size``: this process's place under torchrun (torch.distributed
    initialized): the cells are shared out, every rank returns the whole sweep, and
    rank 0 alone reads and writes ``out_dir``.
    """
    start = time.perf_counter()
    ranks = Ranks(rank, world_size)
    record, units, census_rows, work, batches, labels = _prepare(
        model, data, settings, device, model_name
    )
    record["source"] = source
    out = Path(out_dir) if out_dir is not None and ranks.leader else None
    sweep = _shared_resume(ranks, out, record)
    done = {(c.unit, c.kind, c.k, c.granularity) for c in sweep.cells} if sweep else set()
    todo = [
        (u, kind, k, g)
        for u in units
        for kind in settings.kinds
        if u.tensors.get(kind)
        for g in settings.granularities
        for k in settings.ks
        if _cell_fits(model, u.tensors[kind], k, g)
        if (u.name, kind, k, g) not in done
    ]
    if settings.signal is Signal.FISHER:
        sweep = _predict_cells(model, work, batches, units, todo, settings, record, census_rows,
                               labels, sweep, progress and ranks.leader)  # fmt: skip
    else:
        sweep = _measure_cells(model, work, batches, units, todo, settings, record, census_rows,
                               labels, sweep, out, progress, ranks)  # fmt: skip
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


def _add(sweep: Sweep, cells: list[Cell], out: Path | None) -> None:
    """Append ``cells`` (in their order, which the seconds' sum follows too) and
    rewrite the record, so that a killed sweep resumes after them."""
    for cell in cells:
        sweep.cells.append(cell)
        sweep.seconds += cell.seconds
    if out is not None:
        sweep.write_record(out)


def _merged(ranks: Ranks, mine: list[Cell], order: list[int]) -> list[Cell]:
    """Every rank's cells of a unit, on every rank, in the order one process measures
    them: ``order`` are the cells' positions in the sweep's list, position i measured
    by rank i % world_size (each rank's ``mine`` in its order)."""
    measured = [iter(cells) for cells in ranks.gather(mine)]
    return [next(measured[i % ranks.world_size]) for i in order]


def _shared_resume(ranks: Ranks, out: Path | None, settings: dict[str, Any]) -> Sweep | None:
    """``_resume`` on rank 0 (``out`` is None elsewhere), its sweep or its refusal on
    every rank, so that all of them leave the same cells to do, or all stop."""
    if not ranks.several:
        return _resume(out, settings)
    found: Sweep | str | None = None
    if ranks.leader:
        try:
            found = _resume(out, settings)
        except QretrainError as e:  # every rank stops with rank 0's one line
            found = str(e)
    found = ranks.broadcast(found)
    if isinstance(found, str):
        raise QretrainError(found)
    return found


def _prepare(model, data, settings: AnalyzeSettings, device, model_name):
    if len(data) == 0:
        raise QretrainError("the dataset holds no images")
    loader = image_batches(data, settings.batch_size)
    batches, labels = [], []
    for x, y in loader:
        batches.append(x)
        labels.append(y)
    labels = torch.cat(labels)
    dtype = settings.precision.dtype
    if dtype == torch.bfloat16 and not fast_bfloat16(device):
        logger.warning("the sweep runs in bfloat16, which %s has no native support for (no "
                       "AVX-512 BF16 or AMX on a CPU): expect it several times slower than in "
                       "float32; --precision float32 is faster here", device)  # fmt: skip
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
    units = _units(model, census_rows, settings)
    arch = get_arch(model)
    record = {
        "model": model_name or (arch.spec if arch else type(model).__name__),
        "model_sha256": model_fingerprint(model),
        "data": data.describe() if hasattr(data, "describe") else f"{len(data)} images",
        "images": len(data),
        "labeled": bool((labels >= 0).all()),
        **settings.to_dict(),
    }
    return record, units, census_rows, work, batches, labels


def _units(model: nn.Module, rows: list[LayerCensus],
           settings: AnalyzeSettings) -> list[SweepUnit]:  # fmt: skip
    chosen = _select(model, rows, settings.select) if settings.select else rows
    groups: dict[str, list[LayerCensus]] = {}
    for r in chosen:
        groups.setdefault(str(r.layer) if settings.unit is Unit.LAYER else r.block, []).append(r)
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
        units.append(SweepUnit(name, span, modules, tensors, params))
    return units


def _select(model: nn.Module, rows: list[LayerCensus], selector: Selector) -> list[LayerCensus]:
    """The layers ``selector`` names (its name, type and layers keys)."""
    picked = [r for r in rows if selector.matches_module(
        r.module, r.layer, type_names(model.get_submodule(r.module)))]  # fmt: skip
    if not picked:
        raise QretrainError(
            f"select {str(selector)!r} selects no layer; layers run 1-{len(rows)} "
            "(see `qretrain inspect`)"
        )
    return picked


def _resume(out: Path | None, settings: dict[str, Any]) -> Sweep | None:
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    if not (out / RECORD).is_file():
        return None
    old = Sweep.load(out)
    defaults = AnalyzeSettings().to_dict()  # a setting added since the record holds its default
    differ = [k for k in settings if old.settings.get(k, defaults.get(k)) != settings[k]]
    if differ:
        details = "; ".join(f"{k}: {old.settings.get(k)!r} there, {settings[k]!r} now"
                            for k in differ)  # fmt: skip
        raise QretrainError(
            f"{str(out)!r} holds a sweep with other settings ({details}); "
            "use another folder, or delete it to start over"
        )
    logger.info("resuming the sweep in %s: %d cells done", out, len(old.cells))
    return old


def _baseline(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor,
              packed_bytes: int | None = None) -> dict:  # fmt: skip
    float32_bytes = sum(t.numel() * 4 for t in model.state_dict().values()
                        if t.is_floating_point())  # fmt: skip
    labeled = bool((labels >= 0).all())
    return {
        "top1": topk_accuracy(logits, labels, 1) if labeled else None,
        "file_bytes": file_bytes(model) if packed_bytes is None else packed_bytes,
        "float32_bytes": float32_bytes,
    }


def _cell_fits(model: nn.Module, names: tuple[str, ...], k: int, granularity: str) -> bool:
    """Whether a unit's tensors ``names`` get a cell of ``granularity`` at ``k``: always
    per tensor; per channel where it pays (``_channels_pay``); as pairs where every
    tensor's output channels pair up within a group (``_pairs_fit``)."""
    if granularity == "channel":
        return _channels_pay(model, names, k)
    if granularity == "pairs":
        return all(_pairs_fit(model, n) for n in names)
    return True


def _pairs_fit(model: nn.Module, name: str) -> bool:
    """Whether tensor ``name`` is the weight of a convolution or linear layer whose
    output channels pair up within each group. Core ML stores pairs along the output
    channels of those layers only: a transposed convolution's output axis is its
    second, and a depthwise convolution's pairs would join two groups
    (coremltools' ``is_cluster_dim_valid``), so such cells would be float32 in a
    package sized for tables."""
    module = model.get_submodule(name.rpartition(".")[0])
    if not isinstance(module, (nn.Linear, _ConvNd)) or getattr(module, "transposed", False):
        return False
    shape = get_tensor(model, name).shape
    return pairs_fit(shape) and (shape[0] // getattr(module, "groups", 1)) % 2 == 0


def _channels_pay(model: nn.Module, names: tuple[str, ...], k: int) -> bool:
    """Whether a codebook of ``k`` values per output channel is worth a cell for every
    tensor ``names``: it has channels (two or more dimensions), and each channel's
    float32 codebook takes at most half the bytes of that channel's indices (64 k <=
    row length x bits). Beyond that one more bit per weight for the whole tensor buys
    more for the bytes (bench_grouped_codebooks.py), and the clustering itself, one
    exact programme per channel, costs the most: EfficientNet-Lite0's head at k=256,
    1,280 channels of 320 values, takes 99 s."""
    for n in names:
        tensor = get_tensor(model, n)
        if tensor.dim() < 2 or 64 * k > tensor[0].numel() * index_bits(k):
            return False
    return True


def _sweep_kind(model, work, stages, unit, kind, granularity: str, ks,
                settings: AnalyzeSettings, labeled: bool, base_logits, labels, baseline,
                raw_bytes):  # fmt: skip
    """Yield the cells of one unit, kind and granularity, one per k in ``ks``."""
    names = unit.tensors[kind]
    clustered, cluster_seconds = _cluster_unit(model, names, ks, granularity, settings,
                                               raw_bytes)  # fmt: skip
    targets = {n: get_tensor(work, n) for n in names}
    originals = {n: t.detach().clone() for n, t in targets.items()}
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
        sizes = _sizes(names, clustered, k, raw_bytes, baseline["file_bytes"])
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
            granularity=granularity,
        )


def _measure_cells(model, work, batches, units, todo, settings: AnalyzeSettings, record,
                   census_rows, labels, sweep: Sweep | None, out: Path | None,
                   progress: bool, ranks: Ranks) -> Sweep:  # fmt: skip
    """``sweep`` (a new one when None) with the cells of ``todo`` measured, a forward
    pass from the unit on per cell; the record is rewritten after every cell (under
    torchrun, after every unit: cell i of ``todo`` is measured by rank i % world_size)."""
    stages = Stages(work, batches)
    base_logits = stages.logits()
    if sweep is None:
        sweep = Sweep(record, census_rows, _baseline(model, base_logits, labels))
    raw_bytes: dict[str, int] = {}
    bar = Progress("Sweeping", len(todo), "cells", enabled=progress and ranks.leader,
                   kinds=Counter(g for _, _, _, g in todo))  # fmt: skip
    for unit in units:
        cells = [(i, kind, k, g) for i, (u, kind, k, g) in enumerate(todo) if u is unit]
        if not cells:
            continue
        # Every rank moves its split through every unit, as one process does, so that
        # the frontier a cell reruns from holds the same values bit for bit.
        stages.advance(stages.boundary_of(set(unit.modules)))
        measured = []
        for kind, g in dict.fromkeys((kind, g) for _, kind, _, g in cells):
            wanted_ks = [k for i, kd, k, gd in cells
                         if (kd, gd) == (kind, g) and i % ranks.world_size == ranks.rank]  # fmt: skip
            if not wanted_ks:
                continue
            bar.note(f"{unit.name} {cell_label(kind, g)}")
            for cell in _sweep_kind(model, work, stages, unit, kind, g, wanted_ks, settings,
                                    record["labeled"], base_logits, labels, sweep.baseline,
                                    raw_bytes):  # fmt: skip
                if ranks.several:
                    measured.append(cell)
                    continue
                _add(sweep, [cell], out)  # after every cell: a killed sweep resumes
                bar.update(1, kind=g)
        if ranks.several:
            _add(sweep, _merged(ranks, measured, [i for i, _, _, _ in cells]), out)
            for g, n in Counter(g for _, _, _, g in cells).items():
                bar.update(n, kind=g)
    bar.close()
    return sweep


def _predict_cells(model, work, batches, units, todo, settings: AnalyzeSettings, record,
                   census_rows, labels, sweep: Sweep | None, progress: bool) -> Sweep:  # fmt: skip
    """``sweep`` (a new one when None) with the cells of ``todo`` clustered and their KL
    predicted (``signal: fisher``): one forward and backward pass over the images. The
    cells are recorded together at the end (the passes are shared), so a killed run
    starts again; a finished one, resumed, runs nothing."""
    if not todo and sweep is not None:
        return sweep
    base_bytes = file_bytes(model) if sweep is None else sweep.baseline["file_bytes"]
    bar = Progress("Clustering", len(todo), "cells", enabled=progress,
                   kinds=Counter(g for _, _, _, g in todo))  # fmt: skip
    cells, changes, raw_bytes = [], {}, {}
    dtype = settings.precision.dtype
    for unit in units:
        for kind, g in ((kind, g) for kind in settings.kinds for g in settings.granularities):
            ks = [k for u, kd, k, gd in todo if u is unit and (kd, gd) == (kind, g)]
            if not ks:
                continue
            bar.note(f"{unit.name} {cell_label(kind, g)}")
            names = unit.tensors[kind]
            clustered, cluster_seconds = _cluster_unit(model, names, ks, g, settings, raw_bytes)
            originals = {n: get_tensor(model, n).detach().float() for n in names}
            for k in ks:
                exact = all(torch.equal(clustered[n][k][1], originals[n]) for n in names)
                if not exact:  # exact cells change nothing: predicted 0 without a look
                    changes[unit.name, kind, k, g] = {
                        n: (clustered[n][k][1] - originals[n]).to(dtype) for n in names
                    }
                sizes = _sizes(names, clustered, k, raw_bytes, base_bytes)
                cells.append(Cell(unit=unit.name, layers=unit.layers, kind=kind, k=k,
                                  params=unit.params[kind], file_bytes=sizes[Layout.PACKED],
                                  paper_bytes=sizes[Layout.PAPER], top1=None, agreement=None,
                                  kl=0.0, exact=exact, seconds=cluster_seconds,
                                  predicted=True, granularity=g))  # fmt: skip
                bar.update(1, kind=g)
    bar.close()
    start = time.perf_counter()
    kls, base_logits = predicted_kls(work, batches, changes, seed=settings.seed, progress=progress)
    share = (time.perf_counter() - start) / max(len(cells), 1)  # the passes, shared out
    for c in cells:
        c.kl = kls.get((c.unit, c.kind, c.k, c.granularity), 0.0)
        c.seconds += share
    if sweep is None:
        sweep = Sweep(record, census_rows, _baseline(model, base_logits, labels, base_bytes))
    sweep.cells += cells
    sweep.seconds += sum(c.seconds for c in cells)
    return sweep


def _cluster_unit(model: nn.Module, names: tuple[str, ...], ks: list[int], granularity: str,
                  settings: AnalyzeSettings, raw_bytes: dict[str, int]
                  ) -> tuple[dict[str, dict[int, tuple]], float]:  # fmt: skip
    """name -> k -> (ClusteredTensor, values) for each tensor of a unit and kind, at
    ``granularity``, and the seconds that took per k; fills ``raw_bytes`` with each
    tensor's unclustered entry."""
    start = time.perf_counter()
    clustered = {}
    for n in names:  # the settings checked ks; each tensor is checked here, once
        check_values(get_tensor(model, n), n)
        clustered[n] = _cluster_many(get_tensor(model, n), ks, settings.method,
                                     Granularity(granularity), settings.seed)  # fmt: skip
    cluster_seconds = (time.perf_counter() - start) / len(ks)
    for n in names:
        if n not in raw_bytes:
            raw_bytes[n] = entry_file_bytes(n, get_tensor(model, n))
    return clustered, cluster_seconds


def _sizes(names: tuple[str, ...], clustered: dict[str, dict[int, tuple]], k: int,
           raw_bytes: dict[str, int], base_bytes: int) -> dict[Layout, int]:  # fmt: skip
    """The packed and paper file sizes with the tensors ``names`` clustered at ``k``
    (``base_bytes``: the unclustered packed file)."""
    sizes = {}
    for layout in (Layout.PACKED, Layout.PAPER):
        delta = sum(entry_file_bytes(n, clustered[n][k][1], clustered[n][k][0], layout)
                    - raw_bytes[n] for n in names)  # fmt: skip
        sizes[layout] = base_bytes + delta
    return sizes


def _order(sweep: Sweep, units: list[SweepUnit], settings: AnalyzeSettings) -> None:
    """Cells in unit, kind, granularity, k order, whatever order a resumed run added them in."""
    rank = {u.name: i for i, u in enumerate(units)}
    kind_rank = {k: i for i, k in enumerate(settings.kinds)}
    g_rank = {g: i for i, g in enumerate(settings.granularities)}
    sweep.cells.sort(key=lambda c: (rank.get(c.unit, len(rank)), kind_rank.get(c.kind, 9),
                                    g_rank.get(c.granularity, 9), c.k))  # fmt: skip
