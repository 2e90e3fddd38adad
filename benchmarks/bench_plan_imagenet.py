"""Automatic Lite0 plans made without ImageNet, judged on the ImageNet evaluation set.

    python benchmarks/bench_plan_imagenet.py --imagenet ../shared/imagenet-sample-dev

1. Sweep EfficientNet-Lite0 on 256 images of the ``natural`` pool (seed 0; weights, 9
   k, bfloat16 passes) unless ``--sweep DIR`` holds one already.
2. For each planning signal (``agreement``: top-1 flips, the old one; ``kl``: mean KL
   to the original) and each target size (4.5x, 5x, 6x smaller than float32), the
   smallest-predicted-cost plan at that size, verified on the next 256 pool images.
   With ``--budget 1``: instead, the plan each signal makes at a budget of 1 point of
   agreement; for ``kl`` the point is turned into nats by the sweep's own cells (the
   median KL per point of flips over the pool's cells, label-free).
3. Each plan's packed file, top-1/top-5, agreement and top-1 drop with a paired 95%
   bootstrap interval on the ImageNet evaluation set, which nothing else here reads.
Results: benchmarks/results/plan_imagenet.json (rows merged by name).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from pathlib import Path

from _common import RESULTS, ImageNet, Machine, parser, read_json, write_result

import qretrain
from qretrain.models import get_arch

OUT = RESULTS / "plan_imagenet.json"
TARGETS = (4.5, 5.0, 6.0)
SIGNALS = ("agreement", "kl")


def main() -> None:
    cli = parser(__doc__, imagenet=True)
    cli.add_argument("--sweep", default="out/sweep-natural", help="sweep folder (reused)")
    cli.add_argument("--budget", type=float, metavar="POINTS",
                     help="plans at this budget instead of the target sizes")  # fmt: skip
    args = cli.parse_args()
    machine = Machine()
    model = qretrain.load_model("efficientnet-lite0")
    contract = get_arch(model).contract
    sweep_dir = Path(args.sweep)
    if not (sweep_dir / "sweep.json").exists():
        sweep_data = qretrain.load_dataset("natural", contract, limit=256, seed=0)
        qretrain.analyze(model, sweep_data, sweep_dir, qretrain.AnalyzeSettings(
            kinds=["weight"], precision="bfloat16"), plots=False)  # fmt: skip
    sweep = qretrain.Sweep.load(sweep_dir)
    verify = qretrain.load_dataset("natural", contract, limit=256, seed=0, offset=256)
    imagenet = ImageNet(args.imagenet, model)
    float32 = sweep.baseline["float32_bytes"]
    rows = []
    # nats of mean KL per point of top-1 flips, over the sweep's cells that flip any
    nats = statistics.median(c.kl / (100 * (1 - c.agreement)) for c in sweep.cells
                             if c.agreement < 1)  # fmt: skip
    if args.budget is not None:
        cases = [(signal, None, args.budget * (nats if signal == "kl" else 1.0))
                 for signal in SIGNALS]  # fmt: skip
    else:
        cases = [(signal, target, None) for signal in SIGNALS for target in TARGETS]
    with tempfile.TemporaryDirectory() as tmp:
        for signal, target, budget in cases:
            size = int(float32 / target) if target else None
            settings = qretrain.PlanSettings(metric=signal, max_drop=budget, target_size=size)
            unit = "nats" if signal == "kl" else "points"
            name = f"{signal} at {target:g}x" if target else f"{signal} at {budget:.4g} {unit}"
            plan = qretrain.auto_plan(sweep, model, verify, settings)
            clustered = copy.deepcopy(model)
            qretrain.cluster_(clustered, plan.plan, progress=False)
            saved = qretrain.save(clustered, Path(tmp) / "plan.h5")
            r = imagenet.row(name, imagenet.logits(clustered), saved.file_bytes, float32)
            r.update(signal=signal, target_times=target, cells=len(plan.picks),
                     verify_drop=plan.measured_drop, verify_unit=plan.unit,
                     plan=plan.plan.to_dict())  # fmt: skip
            rows.append(r)
            print(f"{r['model']}: {r['times_smaller']:.2f}x, ImageNet top-1 {r['top1']:.2%} "
                  f"(drop {r['top1_drop_points']:.1f} [{r['drop_95_interval'][0]:.1f}, "
                  f"{r['drop_95_interval'][1]:.1f}]), agreement {r['agreement']:.2%}; "
                  f"on the pool {plan.measured_drop:.4g} {plan.unit}", flush=True)  # fmt: skip
    old = read_json(OUT, {"rows": []})["rows"]
    rows = [r for r in old if r["model"] not in {n["model"] for n in rows}] + rows
    record = {"sweep": str(sweep_dir), "sweep_data": sweep.settings["data"],
              "kl_nats_per_point": nats, "verify_data": verify.describe(),
              "imagenet": imagenet.data.describe(), "float32_bytes": float32,
              "rows": rows}  # fmt: skip
    write_result(OUT, record, machine)


if __name__ == "__main__":
    main()
