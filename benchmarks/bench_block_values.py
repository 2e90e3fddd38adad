"""Block-wise retraining with --block-values: the Lite0 7x case's blocks, each pass over a
block on only as many images as hold V of its output values, against the same case's
blocks on every image.

Reads what `qretrain run examples/case-effnet.yaml` left in out/case-effnet (its
clustered start and its retraining record, every image per pass), shares the same
unlabeled images out as the recipe did (seed 0), retrains that start block by block
with the recipe's settings and ``block_values`` V, and lets the recipe's guard score
both on the 302 held-out images (no ImageNet image; the rule, set before any ImageNet
figure: kept by the recipe only if its held-out KL is at most 5% above the full run's).
With --imagenet, both files are also scored there. Writes
benchmarks/results/block_values.json.

    qretrain run examples/case-effnet.yaml        # once: out/case-effnet
    python benchmarks/bench_block_values.py --values 16777216 [--imagenet ../shared/imagenet-sample-dev]
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import _common

POOL = "natural+tuxpaint-stamps+tuxpaint-stamps:scenes"
RUN = Path("out/case-effnet")


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--values", type=int, default=1 << 24, help="block_values (default 2^24)")
    cli.add_argument("--imagenet", type=Path, help="also score both files on these images")
    args = cli.parse_args()
    machine = _common.Machine()

    import qretrain
    from qretrain.models import get_arch
    from qretrain.recipe.settings import RecipeSettings
    from qretrain.recipe.split import split
    from qretrain.recipe.stages import guard

    teacher = qretrain.load_model("efficientnet-lite0")
    settings = RecipeSettings(target="7x")
    parts = split(qretrain.load_dataset(POOL, get_arch(teacher).contract), settings)
    full = json.loads((RUN / "label_free.json").read_text())
    config = replace(settings.retrain_config(), block_values=args.values)
    student = qretrain.load(RUN / "clustered.h5")
    start = time.perf_counter()
    result = qretrain.retrain(student, teacher, parts.retrain, config, progress=True)
    seconds = time.perf_counter() - start
    decision = guard(teacher, qretrain.load(RUN / "clustered.h5"), result.model, parts.held_out,
                     device="cpu", what="block_values")  # fmt: skip
    out = RUN / f"block-values-{args.values}.h5"
    qretrain.save(result.model, out)
    rows = {
        "every image": {"guard": full["guard"], "blocks_seconds": full["blocks"]["seconds"],
                        "retrain_seconds": full["wall_seconds"],
                        "mse_after": [b["mse_after"] for b in full["blocks"]["history"]]},
        f"block_values {args.values}": {
            "guard": decision, "blocks_seconds": result.record["blocks"]["seconds"],
            "retrain_seconds": seconds,
            "mse_after": [b["mse_after"] for b in result.record["blocks"]["history"]]},
    }  # fmt: skip
    capped = rows[f"block_values {args.values}"]
    ratio = decision["kl_retrained"] / full["guard"]["kl_retrained"]
    record = {"values": args.values, "rows": rows, "held_out_kl_ratio": ratio,
              "kept_by_rule": ratio <= 1.05}  # fmt: skip
    if args.imagenet is not None:
        imagenet = _common.ImageNet(args.imagenet, teacher)
        for name, file in (
            ("every image", RUN / "label_free.h5"),
            (f"block_values {args.values}", out),
        ):
            logits = imagenet.logits(qretrain.load(file))
            rows[name]["imagenet"] = {**imagenet.scores(logits),
                                      **_common.signal(logits, imagenet.reference)}  # fmt: skip
    _common.write_result(_common.RESULTS / "block_values.json", record, machine)
    print(json.dumps({"held_out_kl_ratio": ratio, "kept_by_rule": record["kept_by_rule"],
                      "blocks_seconds": [rows["every image"]["blocks_seconds"],
                                         capped["blocks_seconds"]]}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
