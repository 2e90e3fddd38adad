"""How well each label-free planner signal predicts the ImageNet top-1 drop of a cell.

    python benchmarks/bench_signal_rank.py --imagenet ../shared/imagenet-sample-dev \\
        --sweep out/sweep-natural --cells 30

A cell is one layer's weight clustered alone at one k. For a seeded sample of the
sweep's cells (k in 2..32, where drops are measurable), each signal the planner can
use is set against the top-1 drop that cell causes on the ImageNet evaluation set
(which no signal reads): top-1 flips (1 - agreement) and mean KL on the `natural`
pool, as the sweep recorded them, and top-1 flips on 256 street-video frames
(`opencv-frames:video`, the signal of the earlier plans), measured here. Reported:
Spearman's rank correlation of each signal with the ImageNet drop over the sample.
Results: benchmarks/results/signal_rank.json.

    python benchmarks/bench_signal_rank.py --imagenet ../shared/imagenet-sample-dev \
        --plans examples/plans/*.yaml benchmarks/results/plan_imagenet.json

The same for whole plans (plan files, and the plans a plan_imagenet.json holds):
flips and mean KL on the 138 `natural` images (of 650) that neither the sweep nor
the plans' verification read (offset 512), flips on the 256 frames, against each
plan's ImageNet drop. Results: benchmarks/results/signal_rank_plans.json.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import torch
from _common import BATCH, RESULTS, ImageNet, Machine, parser, spearman, write_result

import qretrain
from qretrain.metrics import agreement, predict, topk_accuracy
from qretrain.metrics.quality import mean_kl
from qretrain.models import get_arch


def main() -> None:
    cli = parser(__doc__, imagenet=True)
    cli.add_argument("--sweep", default="out/sweep-natural")
    cli.add_argument("--cells", type=int, default=30)
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument(
        "--plans",
        nargs="+",
        metavar="FILE",
        help="rank whole plans instead: plan files and plan_imagenet.json",
    )
    args = cli.parse_args()
    machine = Machine()
    if args.plans:
        return rank_plans(args, machine)
    sweep = json.loads((Path(args.sweep) / "sweep.json").read_text())
    pool = [c for c in sweep["cells"] if 2 <= c["k"] <= 32 and c["kind"] == "weight"]
    cells = random.Random(args.seed).sample(pool, min(args.cells, len(pool)))
    model = qretrain.load_model(sweep["settings"]["model"]).eval()
    contract = get_arch(model).contract
    imagenet = ImageNet(args.imagenet, model)
    frames = qretrain.load_dataset("opencv-frames:video", contract, limit=256)
    frames_ref, _ = predict(model, frames, batch_size=BATCH)
    rows = []
    for cell in cells:
        clustered = copy.deepcopy(model)
        qretrain.cluster_(clustered, {"rules": [{"layers": cell["layers"], "kinds": ["weight"],
                                                 "k": cell["k"]}]})  # fmt: skip
        frame_logits, _ = predict(clustered, frames, batch_size=BATCH)
        rows.append({"layers": cell["layers"], "k": cell["k"],
                     "pool_flips": 1 - cell["agreement"], "pool_kl": cell["kl"],
                     "frames_flips": 1 - agreement(frame_logits, frames_ref),
                     "imagenet_drop": imagenet_drop(imagenet, clustered)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    drops = [r["imagenet_drop"] for r in rows]
    result = {"cells": len(rows), "seed": args.seed, "sweep": sweep["settings"]["data"],
              "spearman": {s: spearman([r[s] for r in rows], drops)
                           for s in ("frames_flips", "pool_flips", "pool_kl")},
              "rows": rows}  # fmt: skip
    write_result(RESULTS / "signal_rank.json", result, machine)
    print(json.dumps(result["spearman"], indent=2))


def imagenet_drop(imagenet: ImageNet, model: torch.nn.Module) -> float:
    """Points of ImageNet top-1 that ``model`` loses against the original."""
    top1 = topk_accuracy(imagenet.logits(model), imagenet.labels, 1)
    return 100 * (imagenet.original_top1 - top1)


def read_plans(files: list[str]) -> list[tuple[str, dict | str]]:
    plans = []
    for f in files:
        if f.endswith(".json"):
            plans += [(r["model"], r["plan"]) for r in json.loads(Path(f).read_text())["rows"]]
        else:
            plans.append((Path(f).stem, f))
    return plans


def rank_plans(args, machine: Machine) -> None:
    model = qretrain.load_model("efficientnet-lite0").eval()
    contract = get_arch(model).contract
    imagenet = ImageNet(args.imagenet, model)
    frames = qretrain.load_dataset("opencv-frames:video", contract, limit=256)
    pool = qretrain.load_dataset("natural", contract, limit=138, seed=0, offset=512)
    frames_ref, _ = predict(model, frames, batch_size=BATCH)
    pool_ref, _ = predict(model, pool, batch_size=BATCH)
    rows = []
    for name, plan in read_plans(args.plans):
        clustered = copy.deepcopy(model)
        qretrain.cluster_(clustered, plan, progress=False)
        frame_logits, _ = predict(clustered, frames, batch_size=BATCH)
        pool_logits, _ = predict(clustered, pool, batch_size=BATCH)
        rows.append({"plan": name, "frames_flips": 1 - agreement(frame_logits, frames_ref),
                     "pool_flips": 1 - agreement(pool_logits, pool_ref),
                     "pool_kl": mean_kl(pool_logits, pool_ref),
                     "imagenet_drop": imagenet_drop(imagenet, clustered)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    drops = [r["imagenet_drop"] for r in rows]
    result = {"plans": len(rows), "pool": pool.describe(), "frames": frames.describe(),
              "spearman": {s: spearman([r[s] for r in rows], drops)
                           for s in ("frames_flips", "pool_flips", "pool_kl")},
              "rows": rows}  # fmt: skip
    write_result(RESULTS / "signal_rank_plans.json", result, machine)
    print(json.dumps(result["spearman"], indent=2))


if __name__ == "__main__":
    main()
