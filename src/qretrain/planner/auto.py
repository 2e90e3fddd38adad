"""Automatic plans from a sweep: smallest file within a quality budget, then verified.

Selection. Every (unit, kind) of the sweep is a group with options "leave alone"
(cost 0, saving 0) or one of its swept cells: a k, with one codebook per tensor or,
where the sweep tried it, per output channel (cost: predicted drop in points; saving:
bytes off the packed file, exact per cell since file entries are independent).
Picking one option per group to maximise the saving within the budget is a
multiple-choice knapsack, solved exactly by dynamic programming over the budget in
steps of 0.01 points. Drops are assumed to add up. With ``last_layer_weight`` W the
cells of the model's last layer weigh W times their cost in the choice (reported
unweighted): retraining block by block makes up for a layer's error in the blocks
after it, and the last layer has none.

Predicted drop of a cell. The measured drop counts flipped predictions, so a cell
flipping none of the sweep's N images still moves the outputs (its mean KL says how
much) and several such cells together flip some. Each cell therefore costs at least
its KL times the points-per-nat the sweep itself shows (a least-squares fit through
the origin on cells that dropped 0-10 points); without that floor a plan takes every
"free" cell at its smallest k and fails verification.

Verification. The chosen plan is applied, the real drop is measured on the
verification data, and while it exceeds the budget the chosen cell with the largest
predicted drop moves to its next larger k (or is left alone after the largest),
each step measured again. The real packed file is then written and its size read.

Refinement (``refine`` rounds, target-size plans). Drops do not add up: clustering
many cells compounds some errors and cancels others, so the knapsack's sweep costs
misjudge the cells a plan adds last. A round measures the plan's gradient of the mean
KL to the original on the verification data (one backward pass) and gives each
chosen cell its share of the measured drop, ``g . (w - w0) / 2`` for its tensors'
change ``w - w0`` (for a quadratic KL the shares sum to the KL exactly, interactions
split evenly). Every other cost is scaled by the chosen cells' median ratio of
share to sweep cost (a chosen cell's other k keep their scaled difference to it), the knapsack runs
again at the same size, and the new plan is kept only if its measured drop is lower.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from qretrain.analysis.record import Sweep, cell_label
from qretrain.cluster.options import Granularity
from qretrain.cluster.state import clusters_of, plans_of
from qretrain.cluster.tensor import ClusteredTensor, _cluster_many, check_values, pairs_fit
from qretrain.data.batches import image_batches
from qretrain.errors import QretrainError
from qretrain.export.options import EXACT_K, Deploy
from qretrain.export.sizes import coreml_tensor_bytes
from qretrain.metrics.quality import agreement, kl_per_input, mean_kl, predict, topk_accuracy
from qretrain.models.layers import get_tensor
from qretrain.models.selector import parse_layers
from qretrain.plan.plan import Plan
from qretrain.plan.rules import Rule
from qretrain.planner.settings import PlanSettings
from qretrain.progress import track
from qretrain.storage import file_bytes

logger = logging.getLogger(__name__)

STEP = 0.01  # budget resolution, points (for the kl metric: millinats)
MAX_UNITS = 1 << 24  # the DP's table holds at most this many budget steps (128 MiB)
KL_SCALE = 1000.0  # nats -> the DP's units for the kl metric
FIT_MAX_DROP = 10.0  # cells used to fit points per nat of KL
SIZE_ROUNDS = 3  # re-choices of a deploy-sized plan whose measured artifact misses the target
SIZE_SLACK = 0.01  # a measured artifact this much under the target is chosen again


@dataclass(frozen=True)
class Pick:
    """One chosen cell: cluster ``kind`` tensors of ``unit`` to ``k`` values (or pairs),
    with one codebook per tensor, per output channel, or of pairs (``granularity``)."""

    unit: str
    layers: str
    kind: str
    k: int
    tensors: tuple[str, ...]
    cost: float  # predicted drop, points
    saving: int  # bytes off the packed file (or the ``deploy`` artifact)
    granularity: str = "tensor"  # one codebook per tensor, per output channel, or of pairs
    weight: float = 1.0  # how many times the cost counts when choosing (last_layer_weight)

    @property
    def choice_cost(self) -> float:
        """The cost the selection weighs: ``cost`` times ``weight``."""
        return self.cost * self.weight


@dataclass
class AutoPlan:
    """An automatic plan and what it was predicted and measured to do."""

    plan: Plan
    picks: list[Pick]
    metric: str
    max_drop: float | None
    target_bytes: int | None
    base_file_bytes: int
    float32_bytes: int
    predicted_drop: float  # in ``unit``: the sum of the picked cells' costs
    predicted_file_bytes: int
    measured_drop: float | None = None  # in ``unit``, on the verification data
    file_bytes: int | None = None  # the real packed file
    verify_data: str | None = None
    backoffs: list[str] = field(default_factory=list)
    refinements: list[str] = field(default_factory=list)
    costs_refined: bool = False  # a kept refine round re-costed the cells from a measurement
    deploy: Deploy = Deploy.H5  # what the sizes are of
    resized: list[str] = field(default_factory=list)  # re-choices for the measured size
    last_layer_weight: float = 1.0  # how many times the last layer's cost counted

    @property
    def artifact(self) -> str:
        """What the sizes count: the packed file or a Core ML package."""
        return "Core ML package" if self.deploy is Deploy.COREML else "packed file"

    def _fmt(self, drop: float) -> str:
        return f"{drop:.4f}" if self.metric == "kl" else f"{drop:.2f}"

    @property
    def unit(self) -> str:
        """What the budget and the drops count."""
        return unit_of(self.metric)

    def to_yaml(self, sweep_dir: str | None = None) -> str:
        """The plan as YAML, with what it predicts and measures as header comments."""
        lines = [
            "# Automatic plan by `qretrain plan`" + (f" from {sweep_dir}" if sweep_dir else "")
        ]
        budget = (f"max drop {self.max_drop:g} {self.unit}" if self.max_drop is not None
                  else f"target size {self.target_bytes:,} bytes")  # fmt: skip
        if self.last_layer_weight != 1.0:
            budget += f"; the last layer's cost weighed {self.last_layer_weight:g}x in the choice"
        lines.append(f"# budget: {budget}")
        basis = (
            " (costs re-fitted to the measured drop by refining, not the sweep's)"
            if self.costs_refined
            else ""
        )
        lines.append(f"# predicted drop: {self._fmt(self.predicted_drop)} {self.unit}{basis}")
        if self.measured_drop is not None:
            lines.append(f"# measured drop: {self._fmt(self.measured_drop)} {self.unit} "
                         f"on {self.verify_data}")  # fmt: skip
        size = self.file_bytes if self.file_bytes is not None else self.predicted_file_bytes
        what = self.artifact if self.file_bytes is not None else f"predicted {self.artifact}"
        lines.append(f"# {what}: {size:,} bytes, {1 - size / self.float32_bytes:.2%} smaller "
                     f"than float32 ({self.float32_bytes / max(size, 1):.2f}x); unclustered "
                     f"{self.base_file_bytes:,} bytes")  # fmt: skip
        for step in self.backoffs:
            lines.append(f"# backed off: {step}")
        for step in self.resized:
            lines.append(f"# re-sized: {step}")
        for step in self.refinements:
            lines.append(f"# refined: {step}")
        return "\n".join(lines) + "\n" + self.plan.to_yaml()

    def to_dict(self) -> dict:
        """The figures plan.json records (the plan itself goes to PLAN.yaml)."""
        return {"metric": self.metric, "max_drop": self.max_drop,
                "target_size": self.target_bytes, "predicted_drop": self.predicted_drop,
                "measured_drop": self.measured_drop, "verify_data": self.verify_data,
                "file_bytes": self.file_bytes, "cells": len(self.picks),
                "backoffs": self.backoffs, "refinements": self.refinements,
                "costs_refined": self.costs_refined, "deploy": self.deploy.value,
                "resized": self.resized, "float32_bytes": self.float32_bytes,
                "last_layer_weight": self.last_layer_weight}  # fmt: skip

    def summary(self) -> str:
        return self.describe()

    def describe(self) -> str:
        parts = [f"{len(self.picks)} cells clustered",
                 f"predicted drop {self._fmt(self.predicted_drop)} {self.unit}"]  # fmt: skip
        if self.measured_drop is not None:
            parts.append(f"measured drop {self._fmt(self.measured_drop)} on {self.verify_data}")
        size = self.file_bytes if self.file_bytes is not None else self.predicted_file_bytes
        parts.append(f"{self.artifact} {size:,} bytes ({self.float32_bytes / max(size, 1):.2f}x "
                     "smaller than float32)")  # fmt: skip
        return "; ".join(parts)


def auto_plan(
    sweep,
    model: nn.Module | None = None,
    data: Dataset | None = None,
    settings: PlanSettings = PlanSettings(max_drop=1.0),
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> AutoPlan:
    """Choose a plan from ``sweep`` (a Sweep or its folder) within the settings' budget.

    With ``model`` and ``data`` the plan is verified and backed off until the measured
    drop fits ``max_drop``; ``progress`` reports the clustering of its tensors.
    """
    if settings.refine and (model is None or data is None):
        raise QretrainError("refine measures each round on verification data: pass the model "
                            "and data (on the command line: drop --no-verify), or refine 0")  # fmt: skip
    if not isinstance(sweep, Sweep):
        sweep = Sweep.load(sweep)
    metric, max_drop, target_size = settings.metric.value, settings.max_drop, settings.target_size
    if metric != "kl":
        sweep.quality(None, metric)  # raises for accuracy without labels
    groups = _groups(sweep, metric, settings.last_layer_weight)
    base = sweep.baseline["file_bytes"]
    if settings.deploy is Deploy.COREML:
        groups, base = _coreml_groups(groups, model, progress)
    if max_drop is not None:
        scale = KL_SCALE if metric == "kl" else 1.0
        chosen = _knapsack(groups, math.floor(max_drop * scale / STEP + 1e-9))
    else:
        if target_size >= base:
            what = "Core ML package" if settings.deploy is Deploy.COREML else "file"
            raise QretrainError(
                f"the target, {target_size:,} bytes, is no smaller than the model's {what} without "
                f"clustering ({base:,} bytes, {sweep.baseline['float32_bytes'] / base:.2f}x "
                "smaller than float32 already): nothing to cluster; ask for a smaller size"
            )
        chosen = _smallest_cost_for(groups, base - target_size)
    result = _result(sweep, chosen, metric, max_drop, target_size, base, settings.deploy,
                     settings.last_layer_weight)  # fmt: skip
    if model is None or data is None:
        return result
    _verify(result, sweep, groups, model, data, settings.batch_size, device,
            refine=settings.refine, progress=progress)  # fmt: skip
    if target_size is not None and settings.deploy is not Deploy.H5:
        result = _fit_measured_size(result, sweep, groups, model, data, settings, device, progress)
    return result


def _fit_measured_size(result: AutoPlan, sweep, groups, model, data, settings: PlanSettings,
                       device, progress: bool) -> AutoPlan:  # fmt: skip
    """A deploy-sized plan whose measured artifact misses the target (over it, or under
    it by more than ``SIZE_SLACK``) chosen again: the program beside the weights moves
    with the plan (each lookup adds operations), so the measured size re-bases the
    prediction. Of the measured plans that fit, the one with the lowest measured drop."""
    target, steps, fitting = settings.target_size, [], []
    for _ in range(SIZE_ROUNDS + 1):
        if result.file_bytes <= target:
            fitting.append(result)
            if result.file_bytes >= (1 - SIZE_SLACK) * target:
                break
        if len(steps) == SIZE_ROUNDS:
            break
        base = result.file_bytes + sum(p.saving for p in result.picks)
        picks = _smallest_cost_for(groups, base - target)
        if _cells(picks) == _cells(result.picks):
            break
        steps.append(f"{result.artifact} measured {result.file_bytes:,} bytes for a target of "
                     f"{target:,}: cells chosen again to save {base - target:,} bytes")  # fmt: skip
        logger.info("re-sizing: %s", steps[-1])
        result = _result(sweep, picks, settings.metric.value, None, target, base,
                         settings.deploy, settings.last_layer_weight)  # fmt: skip
        _verify(result, sweep, groups, model, data, settings.batch_size, device,
                refine=settings.refine, progress=progress)  # fmt: skip
    if fitting:
        result = min(fitting, key=lambda r: r.measured_drop)
    else:
        logger.warning("the %s measures %s bytes, over the target of %s after %d re-choices",
                       result.artifact, f"{result.file_bytes:,}", f"{target:,}", len(steps))  # fmt: skip
    result.resized = steps
    return result


def _groups(
    sweep, metric: str, last_layer_weight: float = 1.0
) -> dict[tuple[str, str], list[Pick]]:
    """(unit, kind) -> options, by ascending k (per tensor first at each k), with
    predicted costs (points, or for the kl metric millinats: a cell's mean KL, which
    needs no floor), those of a unit holding the model's last layer weighted by
    ``last_layer_weight`` for the choice. A sweep of several granularities gives each
    unit each to choose from: one codebook per channel costs bytes and saves error, one
    of pairs saves error for a few bytes of codebook."""
    if metric == "kl":
        drops, slope = [(KL_SCALE * c.kl, c.kl) for c in sweep.cells], 0.0
    else:
        base_q = sweep.quality(None, metric)
        drops = [(100 * (base_q - sweep.quality(c, metric)), c.kl) for c in sweep.cells]
        fit = [(d, kl) for d, kl in drops if 0 < d <= FIT_MAX_DROP and kl > 0]
        slope = sum(d * kl for d, kl in fit) / sum(kl * kl for _, kl in fit) if fit else 0.0
    census = {str(r.layer): r for r in sweep.census}
    last = max(r.layer for r in sweep.census)
    groups: dict[tuple[str, str], list[Pick]] = {}
    for c, (drop, kl) in zip(sweep.cells, drops):
        layers = parse_layers(c.layers)
        rows = [census[str(n)] for n in sorted(layers)]
        tensors = tuple(t for r in rows for t in r.tensors.get(c.kind, ()))
        cost = max(drop, slope * kl, 0.0)
        saving = sweep.baseline["file_bytes"] - c.file_bytes
        weight = last_layer_weight if last in layers else 1.0
        groups.setdefault((c.unit, c.kind), []).append(
            Pick(c.unit, c.layers, c.kind, c.k, tensors, cost, saving, c.granularity, weight)
        )
    for options in groups.values():
        options.sort(key=lambda p: (p.k, p.granularity != "tensor"))
    return groups


def _coreml_groups(groups, model: nn.Module | None, progress: bool):
    """``groups`` with only the k a Core ML lookup table stores exactly, each saving in
    the package's bytes (``export.sizes``); and the unclustered package's bytes.

    The weight file is predicted tensor by tensor; the program beside it is not, so it
    is measured once: the model converted with every swept tensor as a 256-value table
    (its program then holds each lookup), those tables then counted back as float32."""
    if model is None:
        raise QretrainError("a plan for coreml is sized by converting the model: give the "
                            "model (on the command line: drop --no-verify)")  # fmt: skip
    from qretrain.export.formats import coreml_package_bytes

    shapes = {n: get_tensor(model, n).shape for options in groups.values() for p in options
              for n in p.tensors}  # fmt: skip
    numel = {n: shape.numel() for n, shape in shapes.items()}
    exact = EXACT_K[Deploy.COREML]
    sized = {}
    for key, options in groups.items():
        kept = [dataclasses.replace(p, saving=sum(coreml_tensor_bytes(numel[n])
                                                  - _table_bytes(shapes[n], p)
                                                  for n in p.tensors))
                for p in options if p.k in exact]  # fmt: skip
        if kept:
            sized[key] = kept
    if not sized:
        raise QretrainError(f"the sweep has no k Core ML stores exactly ({', '.join(map(str, exact))}):"
                            " analyze again with --k 16,64,256 or another of them")  # fmt: skip
    probe = copy.deepcopy(model).cpu()
    with torch.no_grad():
        for n in numel:
            tensor = get_tensor(probe, n)
            tensor.copy_(_uniform_levels(tensor, 256))
    if progress:
        logger.info("sizing the Core ML package: converting the model once")
    measured = coreml_package_bytes(probe)
    base = measured + sum(
        coreml_tensor_bytes(m) - coreml_tensor_bytes(m, 256) for m in numel.values()
    )
    return sized, base


def _table_bytes(shape: torch.Size, pick: Pick) -> int:
    """Package bytes of a tensor of ``shape`` as ``pick``'s lookup table: one row per
    output channel for a codebook per channel, as wide as a row can need (a row of
    fewer values than k holds no more than it has); a table of pairs where the output
    channels pair up (else the one table a codebook of pairs falls back to)."""
    if pick.granularity == "pairs" and pairs_fit(shape):
        return coreml_tensor_bytes(shape.numel(), min(pick.k, shape.numel() // 2), vector=2)
    rows = shape[0] if pick.granularity == "channel" else 1
    return coreml_tensor_bytes(shape.numel(), min(pick.k, shape.numel() // rows), rows)


def _uniform_levels(tensor: torch.Tensor, k: int) -> torch.Tensor:
    """``tensor`` rounded to ``k`` evenly spaced values between its extremes: at most k
    distinct values, so Core ML stores it as a table of k."""
    low, high = tensor.min(), tensor.max()
    step = (high - low) / (k - 1) if high > low else torch.ones((), dtype=tensor.dtype)
    return low + torch.round((tensor - low) / step) * step


def _units_of(cost: float) -> int:
    return math.ceil(cost / STEP - 1e-9)


def _dp(groups, budget: int) -> tuple[np.ndarray, list[np.ndarray], list[list[Pick]]]:
    """best[b]: the largest saving with total cost <= b units; choice tables to trace."""
    if budget > MAX_UNITS:  # costs this large come from outputs of extreme magnitude
        raise QretrainError(
            f"cannot plan: the cheapest plan that could reach the target has a predicted "
            f"drop {budget / MAX_UNITS:,.0f} times the largest the planner resolves; the "
            "model's outputs change enormously with any clustering: check its weights and "
            "input contract, or give a larger target"
        )
    best = np.zeros(budget + 1)
    choices, option_lists = [], []
    for options in groups.values():
        options = [p for p in options if p.saving > 0 and _units_of(p.choice_cost) <= budget]
        new = best.copy()
        choice = np.full(budget + 1, -1, dtype=np.int16)  # an option's index, or -1
        for j, p in enumerate(options):
            c = _units_of(p.choice_cost)
            candidate = np.full(budget + 1, -np.inf)
            candidate[c:] = best[: budget + 1 - c] + p.saving
            better = candidate > new
            new[better] = candidate[better]
            choice[better] = j
        best = new
        choices.append(choice)
        option_lists.append(options)
    return best, choices, option_lists


def _trace(choices, option_lists, budget: int) -> list[Pick]:
    picks, b = [], budget
    for choice, options in zip(reversed(choices), reversed(option_lists)):
        j = choice[b]
        if j >= 0:
            picks.append(options[j])
            b -= _units_of(options[j].choice_cost)
    return list(reversed(picks))


def _knapsack(groups, budget: int) -> list[Pick]:
    best, choices, option_lists = _dp(groups, budget)
    return _trace(choices, option_lists, budget)


def _feasible_cost(groups, needed: int) -> int:
    """The cost, in DP units, of one choice that saves at least ``needed`` bytes: the
    lowest per-option cost bound t such that taking each group's largest saving among
    options costing at most t saves enough; or, if none does, of every group's largest
    saving (the DP then says the target is unreachable).

    Any saving-enough choice bounds the cheapest one, so the DP's table needs no more
    entries than this. Summing every group's costliest option instead made the table as
    long as the costs are large: predicted KLs of a 1-value codebook run to hundreds of
    nats, and for EfficientNet-Lite0 the tables took over 24 GB."""
    costed = [[(_units_of(p.choice_cost), p.saving) for p in opts if p.saving > 0]
              for opts in groups.values()]  # fmt: skip
    bounds = sorted({c for opts in costed for c, _ in opts})

    def choice(bound: int) -> tuple[int, int]:  # (cost, saving) of the best under bound
        cost = saving = 0
        for opts in costed:
            fit = [o for o in opts if o[0] <= bound]
            if fit:
                c, s = max(fit, key=lambda o: (o[1], -o[0]))
                cost, saving = cost + c, saving + s
        return cost, saving

    low, high = 0, len(bounds) - 1
    if not bounds or choice(bounds[high])[1] < needed:
        return sum(max((c for c, _ in opts), default=0) for opts in costed)
    while low < high:  # the smallest bound whose choice saves enough
        middle = (low + high) // 2
        if choice(bounds[middle])[1] >= needed:
            high = middle
        else:
            low = middle + 1
    return choice(bounds[low])[0]


def _smallest_cost_for(groups, needed: int, cap: int | None = None) -> list[Pick]:
    """The cheapest choice saving at least ``needed`` bytes; ``cap``: the cost of a
    choice known to save enough (bounds the DP's table), else every group's largest."""
    if needed <= 0:
        return []
    if cap is None:
        cap = _feasible_cost(groups, needed)
    best, choices, option_lists = _dp(groups, cap)
    reachable = np.nonzero(best >= needed)[0]
    if len(reachable) == 0:
        raise QretrainError(
            f"target size unreachable: the sweep's cells save at most {int(best[-1]):,} bytes "
            f"of the {needed:,} needed"
        )
    return _trace(choices, option_lists, int(reachable[0]))


def _result(sweep, picks: list[Pick], metric, max_drop, target_size, base: int,
            deploy: Deploy = Deploy.H5, last_layer_weight: float = 1.0) -> AutoPlan:  # fmt: skip
    return AutoPlan(
        plan=plan_from_picks(
            picks, sweep.settings.get("method", "kmeans"), sweep.settings.get("seed", 0)
        ),
        picks=picks,
        metric=metric,
        max_drop=max_drop,
        target_bytes=target_size,
        base_file_bytes=base,
        float32_bytes=sweep.baseline["float32_bytes"],
        predicted_drop=sum(p.cost for p in picks) / (KL_SCALE if metric == "kl" else 1.0),
        predicted_file_bytes=base - sum(p.saving for p in picks),
        deploy=deploy,
        last_layer_weight=last_layer_weight,
    )


def plan_from_picks(picks: list[Pick], method: str = "kmeans", seed: int = 0) -> Plan:
    """One exact-name rule per module and kind, in forward order; a rule names its
    granularity only when it is not per tensor (the plan's default)."""
    rules = []
    for p in picks:
        modules = dict.fromkeys(t.rpartition(".")[0] for t in p.tensors)
        granularity = Granularity(p.granularity) if p.granularity != "tensor" else None
        for module in modules:
            rules.append(Rule(k=p.k, name=module, kinds=(p.kind,), granularity=granularity))
    if not rules:
        raise QretrainError("no cell fits the budget: every swept cell costs more than it allows")
    return Plan(rules=tuple(rules), method=method, seed=seed)


def _verify(result: AutoPlan, sweep, groups, model, data, batch_size, device,
            refine: int = 0, progress: bool = False) -> None:  # fmt: skip
    metric, budget = result.metric, result.max_drop
    reference, labels = predict(model, data, batch_size=batch_size, device=device)
    method, seed = result.plan.method, result.plan.seed
    originals: dict[str, torch.Tensor] = {}  # every tensor a measured plan clustered
    cache: dict[tuple[str, int, str], tuple[ClusteredTensor, torch.Tensor]] = {}
    work = copy.deepcopy(model).eval()

    def measure(picks: list[Pick]) -> float:
        with torch.no_grad():
            for name, value in originals.items():
                get_tensor(work, name).copy_(value)
            # Each new (tensor, k) is clustered once: the first measurement is the long one.
            new = sum(any((n, p.k, p.granularity) not in cache for n in p.tensors) for p in picks)
            for p in track(
                picks, "Clustering the plan", unit="cells", enabled=progress and new > 0
            ):
                for n in p.tensors:
                    if n not in originals:  # checked once: every k clusters it unchecked
                        originals[n] = get_tensor(model, n).detach().clone()
                        check_values(originals[n], n)
                    key = n, p.k, p.granularity
                    if key not in cache:
                        cache[key] = _cluster_many(originals[n], [p.k], method,
                                                   Granularity(p.granularity), seed)[p.k]  # fmt: skip
                    get_tensor(work, n).copy_(cache[key][1])
        logits, _ = predict(work, data, batch_size=batch_size, device=device)
        return _drop(logits, reference, labels, metric)

    picks = list(result.picks)
    drop = measure(picks)
    while budget is not None and drop > budget + 1e-9 and picks:
        worst = max(range(len(picks)), key=lambda i: picks[i].choice_cost)
        p = picks[worst]
        larger = [o for o in groups[p.unit, p.kind]
                  if o.k > p.k and o.granularity == p.granularity and o.saving > 0]  # fmt: skip
        step = f"{p.unit} {cell_label(p.kind, p.granularity)} k={p.k} -> "
        if larger:
            picks[worst] = larger[0]
            step += f"k={larger[0].k}"
        else:
            picks.pop(worst)
            step += "left alone"
        result.backoffs.append(f"{step} (measured drop {drop:.2f} > {budget:g})")
        logger.info("backing off: %s", result.backoffs[-1])
        drop = measure(picks)
    if not picks:
        raise QretrainError(f"no plan fits: even a single cell drops more than {budget:g} "
                            f"{unit_of(metric)} on the verification data")  # fmt: skip
    for round_ in range(refine):  # PlanSettings allows it only with a target size
        # work holds ``picks``, the plan measured last (a round undone ends the loop)
        regrouped = _regroup(groups, picks, drop * (KL_SCALE if metric == "kl" else 1.0),
                             _kl_shares(work, picks, originals, reference, data, batch_size,
                                        device))  # fmt: skip
        now = _cells(picks)  # this plan's recalibrated cost bounds the DP's table
        cap = sum(_units_of(o.choice_cost) for opts in regrouped.values() for o in opts
                  if _cell(o) in now)  # fmt: skip
        candidate = _smallest_cost_for(regrouped, result.base_file_bytes - result.target_bytes,
                                       cap)  # fmt: skip
        changed = _cells(candidate) ^ now
        if not changed:
            result.refinements.append(f"round {round_ + 1}: the same cells again (done)")
            break
        measured = measure(candidate)
        kept = measured < drop
        result.refinements.append(
            f"round {round_ + 1}: {len(changed)} cells in or out, measured "
            f"drop {result._fmt(drop)} -> {result._fmt(measured)} ({'kept' if kept else 'undone'})"
        )
        logger.info("refining: %s", result.refinements[-1])
        if not kept:
            break
        picks, drop, groups = candidate, measured, regrouped
        result.costs_refined = True
    final = _result(sweep, picks, metric, result.max_drop, result.target_bytes,
                    result.base_file_bytes, result.deploy)  # fmt: skip
    result.plan, result.picks = final.plan, final.picks
    result.predicted_drop, result.predicted_file_bytes = (final.predicted_drop,
                                                          final.predicted_file_bytes)  # fmt: skip
    # The last measurement is the plan's (cluster_ computes the same values, tested),
    # and its clusterings are cached: the file is sized without clustering again.
    result.measured_drop = drop
    clustered = copy.deepcopy(model)
    with torch.no_grad():
        for p in picks:
            for n in p.tensors:
                get_tensor(clustered, n).copy_(cache[n, p.k, p.granularity][1])
                clusters_of(clustered)[n] = cache[n, p.k, p.granularity][0]
    plans_of(clustered).append(result.plan.to_dict())
    if result.deploy is Deploy.COREML:
        from qretrain.export.formats import coreml_package_bytes

        result.file_bytes = coreml_package_bytes(clustered)
    else:
        result.file_bytes = file_bytes(clustered)
    result.verify_data = data.describe() if hasattr(data, "describe") else f"{len(data)} images"


def _cell(p: Pick) -> tuple[str, str, int, str]:
    """What a pick chooses, whatever its cost says: (unit, kind, k, granularity)."""
    return p.unit, p.kind, p.k, p.granularity


def _cells(picks) -> set[tuple[str, str, int, str]]:
    return {_cell(p) for p in picks}


def _kl_shares(work: nn.Module, picks: list[Pick], originals, reference, data, batch_size,
               device) -> list[float]:  # fmt: skip
    """Each pick's share of the mean KL of ``work`` (which holds the plan) to the
    ``reference`` logits (N, classes): half its tensors' gradient times their change
    ``w - w0``. One forward and backward pass over ``data``."""
    tensors = {n: get_tensor(work, n) for p in picks for n in p.tensors}
    flags = {id(t): t.requires_grad for t in work.parameters()}
    for t in work.parameters():
        t.requires_grad_(False)
    for t in tensors.values():
        t.requires_grad_(True)
        t.grad = None
    work.to(device)
    at = 0
    with torch.enable_grad():
        for x, _ in image_batches(data, batch_size):
            kl = kl_per_input(work(x.to(device)).float(), reference[at : at + len(x)].to(device))
            at += len(x)
            (kl.sum() / len(reference)).backward()
    shares = []
    with torch.no_grad():
        for p in picks:
            shares.append(0.5 * sum(float((tensors[n].grad * (tensors[n] - originals[n].to(device)))
                                          .sum()) for n in p.tensors))  # fmt: skip
    for t in work.parameters():
        t.requires_grad_(flags[id(t)])
        t.grad = None
    return shares


def _regroup(groups, picks: list[Pick], measured: float, shares: list[float]):
    """``groups`` with costs recalibrated by a measured plan (in the DP's units): each
    pick costs its share of ``measured``; every cost the sweep predicts is scaled by the
    picks' median ratio of share to sweep cost, and the other k of a picked group keep
    their scaled difference to the pick. (Scaling them by the pick's own factor instead makes a
    group whose share is about 0, as interactions allow, free at every k.)"""
    total = sum(max(a, 0.0) for a in shares)
    costs = [measured * max(a, 0.0) / total if total > 0 else p.cost for p, a in zip(picks, shares)]
    ratios = [c / p.cost for p, c in zip(picks, costs) if p.cost > 0]
    calibration = float(np.median(ratios)) if ratios else 1.0  # one misjudged cell moves it not
    chosen = {(p.unit, p.kind): (p, c) for p, c in zip(picks, costs)}
    regrouped = {}
    for key, options in groups.items():
        if key not in chosen:
            regrouped[key] = [dataclasses.replace(o, cost=o.cost * calibration) for o in options]
            continue
        pick, cost = chosen[key]
        regrouped[key] = [dataclasses.replace(o, cost=max(cost + (o.cost - pick.cost) * calibration,
                                                          0.0)) for o in options]  # fmt: skip
    return regrouped


def unit_of(metric: str) -> str:
    return "nats of mean KL" if metric == "kl" else f"points of {metric}"


def _drop(logits, reference, labels, metric: str) -> float:
    """The measured drop, in the budget's unit (points, or nats of mean KL)."""
    if metric == "kl":
        return mean_kl(logits, reference)
    if metric == "agreement":
        return 100 * (1 - agreement(logits, reference))
    if not bool((labels >= 0).all()):
        raise QretrainError("the verification data has no labels: use the agreement metric")
    return 100 * (topk_accuracy(reference, labels, 1) - topk_accuracy(logits, labels, 1))
