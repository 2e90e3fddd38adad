"""Learned assignments block by block: the rounding term's weight against a block's error.

Each chosen block of the Lite0 8x case's clustered start (`out/case-effnet-8x/clustered.h5`,
made by `qretrain run examples/case-effnet-8x.yaml`) is retrained alone, as block-wise
retraining trains it (`retrain.blocks.reconstruct`, the recipe's settings at 8 passes, seed
0), on the teacher's inputs to that block for the first ``--images`` of the images the
recipe retrains on (its split at seed 0; no ImageNet image), once per rounding weight.
Per block and weight it records the loss of each pass (soft assignments in all but the
last), the error after the last pass (assignments chosen, codebooks trained), and how many
weights the learned choice moved. At AdaRound's 0.01 the soft passes fit a block whose
weights are hardly clustered, and the error jumps when they are rounded: ``--record``, a
whole block-wise run's record, is summarised first (each block's error after the
rounding over its last soft pass's).

    python benchmarks/bench_rounding_blocks.py --blocks 5 14 15 18 --weights 0.01 10

Writes benchmarks/results/NAME.json (``--name``, default rounding_blocks).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import _common

POOL = "natural+tuxpaint-stamps+tuxpaint-stamps:scenes"


def main() -> None:
    import torch
    from torch.utils.data import Subset, TensorDataset

    import qretrain
    from qretrain.data import load_dataset
    from qretrain.models import get_arch
    from qretrain.recipe.settings import RecipeSettings
    from qretrain.recipe.split import split
    from qretrain.retrain.blocks import BlockPlan, _images, plan_blocks, reconstruct
    from qretrain.retrain.layout import channels_last
    from qretrain.retrain.trainable import trainable_names

    cli = _common.parser(__doc__)
    cli.add_argument("--case", type=Path, default=Path("out/case-effnet-8x"))
    cli.add_argument("--blocks", nargs="+", type=int, default=[5, 14, 15, 18],
                     help="0-based block indices (Lite0: 5 is _blocks.4, 18 _fc)")  # fmt: skip
    cli.add_argument("--weights", nargs="+", type=float, default=[0.01, 10.0])
    cli.add_argument("--images", type=int, default=1024)
    cli.add_argument("--epochs", type=int, default=8, help="passes per block (default 8)")
    cli.add_argument("--name", default="rounding_blocks",
                     help="result file's name (default rounding_blocks)")  # fmt: skip
    cli.add_argument("--record", type=Path,
                     default=_common.RESULTS / "case_effnet_8x_rounding001" / "label_free.json",
                     help="a block-wise run's record whose jump at rounding is summarised "
                     "(default: the 8x case at a rounding term of 0.01)")  # fmt: skip
    args = cli.parse_args()
    machine = _common.Machine()
    jumps = jumps_at_rounding(args.record)
    print(f"{args.record}: error after rounding / last soft pass, {jumps['min']:.1f}x to "
          f"{jumps['max']:.1f}x, median {jumps['median']:.1f}x", flush=True)  # fmt: skip
    teacher = qretrain.load_model("efficientnet-lite0")
    settings = RecipeSettings(target="8x", deploy="coreml", seed=0, epochs=args.epochs)
    parts = split(load_dataset(POOL, get_arch(teacher).contract), settings)
    images = _images(Subset(parts.retrain, range(args.images)))
    base = settings.retrain_config()
    runs = []
    for index in args.blocks:
        inputs = _block_inputs(qretrain.load(args.case / "clustered.h5"), teacher, images, index)
        data = TensorDataset(inputs, torch.zeros(len(inputs), dtype=torch.long))
        for weight in args.weights:
            student = qretrain.load(args.case / "clustered.h5")  # each weight from the start
            with channels_last(student, teacher):
                plan = plan_blocks(student, teacher)
                one = BlockPlan(plan.blocks[index : index + 1], plan.student[index : index + 1],
                                plan.teacher[index : index + 1])  # fmt: skip
                config = replace(base, rounding_lambda=weight)
                example = get_arch(student).example_input()
                trainable = set(trainable_names(student, config.trainable, example))
                start = time.perf_counter()
                record = reconstruct(student, teacher, one, data, config, trainable,
                                     device="cpu", progress=False)  # fmt: skip
            entry = record["history"][0]
            choice = entry.get("assignments", {})
            run = {"block": index, "name": entry["name"], "rounding_lambda": weight,
                   "loss_per_pass": entry["loss_per_pass"], "mse_after": entry["mse_after"],
                   "chosen": choice.get("chosen"), "moved": choice.get("moved"),
                   "free": choice.get("free"), "seconds": time.perf_counter() - start}  # fmt: skip
            runs.append(run)
            print(f"block {index} {run['name']}, lambda {weight:g}: last soft pass "
                  f"{run['loss_per_pass'][-2]:.4g}, after {run['mse_after']:.4g}, "
                  f"moved {run['moved']}/{run['free']}", flush=True)  # fmt: skip
    for index in args.blocks:
        errors = {r["rounding_lambda"]: r["mse_after"] for r in runs if r["block"] == index}
        first = errors[args.weights[0]]
        print(f"block {index}: " + ", ".join(f"lambda {w:g} {e / first:.3f}x"
                                             for w, e in errors.items()))  # fmt: skip
    record = {"case": str(args.case), "images": args.images, "epochs": args.epochs,
              "config": base.to_dict(), "jumps_at_rounding": jumps, "runs": runs}  # fmt: skip
    _common.write_result(_common.RESULTS / f"{args.name}.json", record, machine)


def _block_inputs(student, teacher, images, index: int):
    """The teacher's inputs to block ``index`` for ``images`` (N, ...): its blocks
    0..index-1 run on them, batch norm inside the convolutions as the stage runs them."""
    import torch

    from qretrain.retrain.blocks import _run, plan_blocks
    from qretrain.retrain.fuse import fuse_frozen
    from qretrain.retrain.layout import channels_last

    with channels_last(student, teacher):
        plan = plan_blocks(student, teacher)
        inputs = images.contiguous(memory_format=torch.channels_last)
        for segment in plan.teacher[:index]:
            inputs, _ = _run(fuse_frozen(segment), inputs, "cpu", False)
    return inputs


def jumps_at_rounding(record_path: Path) -> dict:
    """From a block-wise run's record: per block, its error after the pass that follows
    the rounding over its last soft pass's (``loss_per_pass``)."""
    import json
    import statistics

    history = json.loads(record_path.read_text())["blocks"]["history"]
    ratios = {e["name"]: e["mse_after"] / e["loss_per_pass"][-2] for e in history}
    return {"record": str(record_path), "after_over_last_soft": ratios,
            "min": min(ratios.values()), "median": statistics.median(ratios.values()),
            "max": max(ratios.values())}  # fmt: skip


if __name__ == "__main__":
    main()
