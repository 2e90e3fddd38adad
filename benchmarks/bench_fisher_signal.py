"""The fast planner signal: each sweep cell's KL predicted from its Fisher-weighted
clustering error, against the KL the full sweep measures, cell by cell.

    python benchmarks/bench_fisher_signal.py                # both cases
    python benchmarks/bench_fisher_signal.py --case lite0 --plans

lite0: EfficientNet-Lite0 on the first 256 images of the unlabeled ``natural`` pool,
its 50 layers' weights x 9 k, bfloat16 passes (the recipe's sweep). vgg: the
VGG-style Fashion-MNIST reference teacher trained 2 epochs (trained once, then read
from the cache) on 256 fashion-mnist:train images, its 7 layers' weights x 9 k,
float32.

Each case runs the full sweep once (``signal: measured``; its record is kept in
out/fisher-signal/CASE/measured, and a rerun reads it), then the Fisher sweep
(``signal: fisher``) with seeds 0 and 1, and reports Spearman's rank correlation of
predicted with measured KL over all cells, over the cells whose measured KL exceeds
1e-4 nats, over the cells clustering changes, and per k; and each sweep's time.
With --plans, each sweep's plan at the case's target size (``auto_plan``, KL metric,
as the recipe plans) is verified on the next 256 images: the measured KL of the two
plans says whether the fast signal plans as well as the full sweep.
Results: benchmarks/results/fisher_signal.json (the cases run are replaced in it, each
with its machine's load). The machines are shared: a measured sweep read back from
out/ keeps the time of the run that swept it, under that run's load.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from _common import (
    RESULTS,
    ROOT,
    Machine,
    float32_bytes,
    parser,
    read_json,
    reference_teacher,
    spearman,
    write_result,
)

import qretrain
from qretrain.analysis import AnalyzeSettings, Sweep, analyze
from qretrain.planner import PlanSettings, auto_plan

OUT = ROOT / "out" / "fisher-signal"
IMAGES = 256
KL_FLOOR = 1e-4  # nats: below it a bfloat16 sweep's measured KL is mostly rounding
CASES = {
    "lite0": {"model": "efficientnet-lite0", "data": "natural", "precision": "bfloat16",
              "ratio": 7},
    "vgg": {"model": "teacher:vgg", "epochs": 2, "data": "fashion-mnist:train",
            "precision": "float32", "ratio": 10},
}  # fmt: skip


def load(case: dict, offset: int = 0):
    model = (
        reference_teacher("vgg", case["epochs"])
        if "epochs" in case
        else qretrain.load_model(case["model"])
    )
    contract = qretrain.models.get_arch(model).contract
    data = qretrain.load_dataset(case["data"], contract, limit=IMAGES, offset=offset)
    data.labels = None  # label-free: what the recipe sees
    return model, data


def sweep(model, data, folder: Path, precision: str, signal: str, seed: int = 0) -> dict:
    """The sweep in ``folder`` (resumed where a record exists), with its wall seconds."""
    settings = AnalyzeSettings(kinds=["weight"], precision=precision, signal=signal, seed=seed)
    start = time.perf_counter()
    result = analyze(model, data, folder, settings, progress=False, plots=False)
    return {"sweep": result, "wall_seconds": time.perf_counter() - start}


def correlations(measured: Sweep, predicted: Sweep) -> dict:
    pairs = [(c, predicted.cell(c.unit, c.kind, c.k)) for c in measured.cells]

    def rho(chosen) -> dict:
        chosen = list(chosen)
        return {"cells": len(chosen),
                "spearman": spearman([m.kl for m, _ in chosen], [p.kl for _, p in chosen])
                if len(chosen) > 2 else None}  # fmt: skip

    return {
        "all": rho(pairs),
        f"measured_kl_above_{KL_FLOOR:g}": rho((m, p) for m, p in pairs if m.kl > KL_FLOOR),
        "changed": rho((m, p) for m, p in pairs if not m.exact),
        "per_k": {
            str(k): rho((m, p) for m, p in pairs if m.k == k)
            for k in sorted({m.k for m, _ in pairs})
        },
    }


def plan_row(result: Sweep, model, verify, target: int) -> dict:
    start = time.perf_counter()
    plan = auto_plan(result, model, verify, PlanSettings(target_size=target, metric="kl"))
    return {"cells": len(plan.picks), "file_bytes": plan.file_bytes,
            "times_smaller": plan.float32_bytes / plan.file_bytes,
            "predicted_kl": plan.predicted_drop, "measured_kl": plan.measured_drop,
            "backoffs": len(plan.backoffs), "seconds": time.perf_counter() - start}  # fmt: skip


def run_case(name: str, plans: bool) -> dict:
    case = CASES[name]
    model, data = load(case)
    measured = sweep(model, data, OUT / name / "measured", case["precision"], "measured")
    timing = OUT / name / "measured" / "wall.json"  # the wall of the run that swept the cells
    if measured["sweep"].seconds > measured["wall_seconds"]:  # read back, not swept now
        measured["wall_seconds"] = read_json(timing, {}).get("wall_seconds")
    else:
        timing.write_text(json.dumps({"wall_seconds": measured["wall_seconds"]}))
    fisher = {}
    for seed in (0, 1):  # swept again every time: its time is what is measured
        shutil.rmtree(OUT / name / f"fisher-{seed}", ignore_errors=True)
        fisher[seed] = sweep(model, data, OUT / name / f"fisher-{seed}", case["precision"],
                             "fisher", seed)  # fmt: skip
    m, f0, f1 = measured["sweep"], fisher[0]["sweep"], fisher[1]["sweep"]
    record = {
        "model": case["model"], "data": m.settings["data"], "cells": len(m.cells),
        "precision": case["precision"],
        "measured": {"sweep_seconds": m.seconds, "wall_seconds": measured["wall_seconds"]},
        "fisher": {str(s): {"sweep_seconds": r["sweep"].seconds, "wall_seconds": r["wall_seconds"]}
                   for s, r in fisher.items()},
        "spearman": correlations(m, f0),
        "spearman_seed_1": correlations(m, f1),
        "spearman_seed_0_vs_1": spearman([c.kl for c in f0.cells],
                                         [f1.cell(c.unit, c.kind, c.k).kl for c in f0.cells]),
    }  # fmt: skip
    print(name, json.dumps({k: record[k] for k in ("measured", "fisher", "spearman")}, indent=1))
    if plans:
        verify = load(case, offset=IMAGES)[1]
        target = float32_bytes(model) // case["ratio"]
        record["plans"] = {"target_bytes": target, "verify_images": len(verify),
                           "measured": plan_row(m, model, verify, target),
                           "fisher": plan_row(f0, model, verify, target)}  # fmt: skip
        print(name, json.dumps(record["plans"], indent=1))
    return record


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument(
        "--case",
        choices=sorted(CASES),
        action="append",
        help="run this case (repeatable; default: all)",
    )
    cli.add_argument(
        "--plans",
        action="store_true",
        help="also plan from each sweep at the case's target and verify the plans",
    )
    args = cli.parse_args()
    machine = Machine()
    path = RESULTS / "fisher_signal.json"
    results = read_json(path, {}).get("cases", {})
    for name in args.case or sorted(CASES):
        case_machine = Machine()  # each case's own load: the cases kept from earlier runs too
        results[name] = run_case(name, args.plans) | {"machine": case_machine.at_end()}
    write_result(path, {"kl_floor": KL_FLOOR, "cases": results}, machine)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
