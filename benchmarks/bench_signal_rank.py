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

import argparse
import copy
import json
import random
from pathlib import Path

import torch

import qretrain
from qretrain.metrics import agreement, predict, topk_accuracy
from qretrain.metrics.quality import mean_kl
from qretrain.models import get_arch

RESULTS = Path(__file__).parent / "results" / "signal_rank.json"
PLAN_RESULTS = Path(__file__).parent / "results" / "signal_rank_plans.json"


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        i = 0
        while i < len(x):  # ties share their mean rank
            j = i
            while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2
            i = j + 1
        return torch.tensor(r)

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imagenet", required=True)
    parser.add_argument("--sweep", default="out/sweep-natural")
    parser.add_argument("--cells", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plans", nargs="+", metavar="FILE",
                        help="rank whole plans instead: plan files and plan_imagenet.json")
    args = parser.parse_args()
    if args.plans:
        return rank_plans(args)
    sweep = json.loads((Path(args.sweep) / "sweep.json").read_text())
    pool = [c for c in sweep["cells"] if 2 <= c["k"] <= 32 and c["kind"] == "weight"]
    cells = random.Random(args.seed).sample(pool, min(args.cells, len(pool)))
    model = qretrain.load_model(sweep["settings"]["model"]).eval()
    contract = get_arch(model).contract
    imagenet = qretrain.load_dataset(args.imagenet, contract)
    frames = qretrain.load_dataset("opencv-frames:video", contract, limit=256)
    ref, labels = predict(model, imagenet, batch_size=32)
    frames_ref, _ = predict(model, frames, batch_size=32)
    base = topk_accuracy(ref, labels, 1)
    rows = []
    for cell in cells:
        clustered = copy.deepcopy(model)
        qretrain.cluster_(clustered, {"rules": [{"layers": cell["layers"], "kinds": ["weight"],
                                                 "k": cell["k"]}]})  # fmt: skip
        logits, _ = predict(clustered, imagenet, batch_size=32)
        frame_logits, _ = predict(clustered, frames, batch_size=32)
        rows.append({"layers": cell["layers"], "k": cell["k"],
                     "pool_flips": 1 - cell["agreement"], "pool_kl": cell["kl"],
                     "frames_flips": 1 - agreement(frame_logits, frames_ref),
                     "imagenet_drop": 100 * (base - topk_accuracy(logits, labels, 1))})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    drops = [r["imagenet_drop"] for r in rows]
    result = {"cells": len(rows), "seed": args.seed, "sweep": sweep["settings"]["data"],
              "spearman": {s: spearman([r[s] for r in rows], drops)
                           for s in ("frames_flips", "pool_flips", "pool_kl")},
              "rows": rows}  # fmt: skip
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["spearman"], indent=2))


def read_plans(files: list[str]) -> list[tuple[str, dict | str]]:
    plans = []
    for f in files:
        if f.endswith(".json"):
            plans += [(r["model"], r["plan"]) for r in json.loads(Path(f).read_text())["rows"]]
        else:
            plans.append((Path(f).stem, f))
    return plans


def rank_plans(args) -> None:
    model = qretrain.load_model("efficientnet-lite0").eval()
    contract = get_arch(model).contract
    imagenet = qretrain.load_dataset(args.imagenet, contract)
    frames = qretrain.load_dataset("opencv-frames:video", contract, limit=256)
    pool = qretrain.load_dataset("natural", contract, limit=138, seed=0, offset=512)
    ref, labels = predict(model, imagenet, batch_size=32)
    frames_ref, _ = predict(model, frames, batch_size=32)
    pool_ref, _ = predict(model, pool, batch_size=32)
    base = topk_accuracy(ref, labels, 1)
    rows = []
    for name, plan in read_plans(args.plans):
        clustered = copy.deepcopy(model)
        qretrain.cluster_(clustered, plan, progress=False)
        logits, _ = predict(clustered, imagenet, batch_size=32)
        frame_logits, _ = predict(clustered, frames, batch_size=32)
        pool_logits, _ = predict(clustered, pool, batch_size=32)
        rows.append({"plan": name, "frames_flips": 1 - agreement(frame_logits, frames_ref),
                     "pool_flips": 1 - agreement(pool_logits, pool_ref),
                     "pool_kl": mean_kl(pool_logits, pool_ref),
                     "imagenet_drop": 100 * (base - topk_accuracy(logits, labels, 1))})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    drops = [r["imagenet_drop"] for r in rows]
    result = {"plans": len(rows), "pool": pool.describe(), "frames": frames.describe(),
              "spearman": {s: spearman([r[s] for r in rows], drops)
                           for s in ("frames_flips", "pool_flips", "pool_kl")},
              "rows": rows}  # fmt: skip
    PLAN_RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["spearman"], indent=2))


if __name__ == "__main__":
    main()
