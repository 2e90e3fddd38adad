"""Refine rounds for a recipe's plan, judged without labels on the images nothing chose on.

    qretrain run examples/case-effnet-8x.yaml          # the case's work folder (its sweep)
    python benchmarks/bench_plan_refine.py out/case-effnet-8x --rounds 0 2

For each number of refine rounds (``planner.auto``: re-choosing the cells with each one's
measured share of the plan's KL) the recipe's plan is made again from the case's sweep, at
its target and ``deploy``, on its verification images; the clustered start is then scored on
the recipe's held-out images (the guard's: never swept, verified, chosen or trained on): mean
KL and agreement with the original, and the paired 95% bootstrap interval of the KL change
against the first row. Rule, written before any run: a number of rounds replaces 0 in the
recipe only if that interval lies below zero. No ImageNet image is read.
Results: benchmarks/results/plan_refine_<folder>.json.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from _common import RESULTS, Machine, parser, write_result

import qretrain
from qretrain.analysis import Sweep
from qretrain.metrics.quality import agreement, kl_change, mean_kl, predict
from qretrain.models import get_arch
from qretrain.pipeline.config import RunConfig
from qretrain.planner import PlanSettings, auto_plan
from qretrain.recipe import split


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("work", type=Path, help="a recipe run's output folder (qretrain run)")
    cli.add_argument("--rounds", type=int, nargs="+", default=[0, 2])
    args = cli.parse_args()
    machine = Machine()
    config = RunConfig.load(args.work / "config.yaml")
    settings = config.recipe.settings
    model = qretrain.load_model(config.model).eval()
    contract = get_arch(model).contract
    ref = config.data["unlabeled"]  # loaded as `qretrain run` loads it, so split agrees
    data = qretrain.load_dataset(ref.spec, contract, limit=ref.limit, seed=ref.seed,
                                 offset=ref.offset, views=ref.views, teacher=model)  # fmt: skip
    parts = split(data, settings)
    float32 = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    target = settings.target.bytes_for(float32)
    reference, _ = predict(model, parts.held_out)
    sweep = Sweep.load(args.work / "analyze")
    rows, first = {}, None
    for rounds in args.rounds:
        start = time.perf_counter()
        plan = auto_plan(sweep, model, parts.verify,
                         PlanSettings(target_size=target, metric="kl", deploy=settings.deploy,
                                      refine=rounds))  # fmt: skip
        seconds = time.perf_counter() - start
        clustered = copy.deepcopy(model)
        qretrain.cluster_(clustered, plan.plan, progress=False)
        logits, _ = predict(clustered, parts.held_out)
        row = {"seconds": seconds, "cells": len(plan.picks), "size_bytes": plan.file_bytes,
               "verify_kl": plan.measured_drop, "refinements": plan.refinements,
               "held_out_kl": mean_kl(logits, reference),
               "held_out_agreement": agreement(logits, reference)}  # fmt: skip
        if first is None:
            first = logits
        else:
            change, low, high = kl_change(first, logits, reference)
            row |= {"kl_change_vs_first": change, "kl_change_95": [low, high],
                    "replaces_first": high < 0}  # fmt: skip
        rows[rounds] = row
        print(rounds, json.dumps(row))
    record = {"work": str(args.work), "target_size": target, "deploy": settings.deploy.value,
              "held_out": len(parts.held_out), "verify": len(parts.verify), "rows": rows}  # fmt: skip
    write_result(RESULTS / f"plan_refine_{args.work.name}.json", record, machine)


if __name__ == "__main__":
    main()
