"""The analysis sweep and automatic plans on real models, timed with the real CLI.

    python benchmarks/bench_analyze.py --case vgg     # VGG-style Fashion-MNIST teacher
    python benchmarks/bench_analyze.py --case effnet  # EfficientNet-Lite0, opencv-frames

vgg: `qretrain analyze teacher:vgg` on 2,000 labeled fashion-mnist:test images, all
7 layers, weights and biases, k = 1..256 (9 values); then `qretrain plan --max-drop 1
--metric accuracy`, verified on the next 2,000 test images (--offset 2000).

effnet: `qretrain analyze efficientnet-lite0` on 256 unlabeled opencv-frames images
(seed 0), all 50 layers' weights x 9 k, bfloat16 forward passes; `qretrain plan
--max-drop 1 --metric agreement` verified on the disjoint 256 frames (--offset 256);
then coremltools' PostTrainingPalettizer at 8, 6 and 4 bits per tensor, its agreement
drop measured on the same 256 frames and its size as a qretrain packed file (its
palettes stored exactly: each tensor has at most 2^bits values); and, at each of those
file sizes, `qretrain plan --target-size` from the same sweep, measured on the same
frames: the two tools at equal size.

Wall times come from the CLI processes; results go to benchmarks/results/analyze_*.json
and the plots to docs/img/analyze-<case>/.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

import torch
from _common import RESULTS, ROOT, Machine, parser, run_qretrain, write_result

CASES = {
    "vgg": {
        "model": "teacher:vgg",
        "analyze": ["--data", "fashion-mnist:test", "--limit", "2000", "--kinds", "weight,bias"],
        "plan": ["--max-drop", "1", "--metric", "accuracy", "--limit", "2000", "--offset", "2000"],
    },
    "effnet": {
        "model": "efficientnet-lite0",
        "analyze": ["--data", "opencv-frames", "--limit", "256", "--kinds", "weight",
                    "--precision", "bfloat16"],
        "plan": ["--max-drop", "1", "--metric", "agreement", "--limit", "256", "--offset", "256"],
    },
}  # fmt: skip


def palettizer_rows() -> list[dict]:
    """coremltools at 8/6/4 bits per tensor on the plan's verification images."""
    from coremltools.optimize.torch.palettization import (
        PostTrainingPalettizer,
        PostTrainingPalettizerConfig,
    )

    import qretrain
    from qretrain.cluster.state import clusters_of
    from qretrain.cluster.tensor import cluster_many
    from qretrain.metrics.quality import agreement, predict, topk_accuracy
    from qretrain.models.layers import get_tensor

    logging.disable(logging.INFO)  # coremltools logs every layer at INFO
    model = qretrain.load_model("efficientnet-lite0")
    contract = qretrain.models.get_arch(model).contract
    data = qretrain.load_dataset("opencv-frames", contract, limit=256, seed=0, offset=256)
    reference, _ = predict(model, data)
    photos = qretrain.load_dataset("foolbox-imagenet", contract)
    photo_reference, photo_labels = predict(model, photos)
    rows = []
    for bits in (8, 6, 4):
        config = PostTrainingPalettizerConfig.from_dict(
            {"global_config": {"n_bits": bits, "granularity": "per_tensor"}}
        )
        start = time.perf_counter()
        palettized = PostTrainingPalettizer(copy.deepcopy(model), config).compress(inplace=True)
        seconds = time.perf_counter() - start
        stored = copy.deepcopy(model)
        changed = 0
        palettized_state = palettized.state_dict()
        for name, tensor in model.state_dict().items():
            new = palettized_state.get(name)
            if new is None or torch.equal(new, tensor) or not tensor.is_floating_point():
                continue
            # At most 2^bits distinct values: qretrain stores them exactly at k = 2^bits.
            clustered, decoded = cluster_many(new, [2**bits], name=name)[2**bits]
            assert torch.equal(decoded, new.float()), name
            with torch.no_grad():
                get_tensor(stored, name).copy_(decoded)
            clusters_of(stored)[name] = clustered
            changed += 1
        file_bytes = qretrain.storage.file_bytes(stored)
        logits, _ = predict(stored, data)
        photo_logits, _ = predict(stored, photos)
        rows.append({
            "bits": bits,
            "tensors_palettized": changed,
            "agreement_drop_points": 100 * (1 - agreement(logits, reference)),
            "foolbox_top1": topk_accuracy(photo_logits, photo_labels, 1),
            "foolbox_agreement": agreement(photo_logits, photo_reference),
            "file_bytes": file_bytes,
            "seconds": seconds,
        })  # fmt: skip
        print(f"coremltools {bits} bits: {changed} tensors, drop "
              f"{rows[-1]['agreement_drop_points']:.2f} points, {file_bytes:,} bytes")  # fmt: skip
    return rows


def full_pass_estimate(sweep: dict) -> dict:
    """The anchor for the sweep's speed: every cell paying a whole forward pass, priced
    at the median layer-1 cell of the same run (those rerun the whole model)."""
    cells = sweep["cells"]
    median = statistics.median(c["seconds"] for c in cells if c["unit"] == "1" and not c["exact"])
    estimate = median * len(cells)
    return {"layer1_cell_median_s": median, "full_pass_estimate_s": estimate,
            "cells_s": sweep["seconds"], "speedup": estimate / sweep["seconds"],
            "exact_cells": sum(c["exact"] for c in cells)}  # fmt: skip


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--case", choices=list(CASES), required=True)
    cli.add_argument("--out", default="out/bench-analyze", help="work folder")
    cli.add_argument(
        "--reuse-sweep",
        action="store_true",
        help="keep the sweep (and its time) of the last run; redo the rest",
    )
    args = cli.parse_args()
    machine = Machine()
    case = CASES[args.case]
    sweep_dir = Path(args.out) / args.case
    out = RESULTS / f"analyze_{args.case}.json"
    if args.reuse_sweep:
        analyze_s = json.loads(out.read_text())["analyze_wall_s"]
    else:
        if sweep_dir.exists():
            shutil.rmtree(sweep_dir)  # a timed run starts from nothing
        analyze_s = run_qretrain(["analyze", case["model"], *case["analyze"], "-o",
                                  str(sweep_dir), "--quiet"])  # fmt: skip
    plan_file = sweep_dir / "plan.yaml"
    plan_s = run_qretrain(["plan", str(sweep_dir), *case["plan"], "-o", str(plan_file)])
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    header = [line[2:] for line in plan_file.read_text().splitlines() if line.startswith("# ")]
    record = {
        "command": f"python benchmarks/bench_analyze.py --case {args.case}",
        "analyze_wall_s": analyze_s,
        "plan_wall_s": plan_s,
        "cells": len(sweep["cells"]),
        "speed": full_pass_estimate(sweep),
        "settings": sweep["settings"],
        "baseline": sweep["baseline"],
        "plan_header": header,
        "plan": plan_file.read_text(),
    }
    if args.case == "effnet":
        record["coremltools"] = palettizer_rows()
        record["same_size"] = []
        for row in record["coremltools"]:
            sized = sweep_dir / f"plan-{row['bits']}bits-size.yaml"
            run_qretrain(["plan", str(sweep_dir), "--target-size", str(row["file_bytes"]),
                          "--limit", "256", "--offset", "256", "-o", str(sized)])  # fmt: skip
            lines = [line[2:] for line in sized.read_text().splitlines() if line.startswith("# ")]
            record["same_size"].append({"coremltools_bits": row["bits"], "plan_header": lines})
    images = ROOT / "docs" / "img" / f"analyze-{args.case}"
    images.mkdir(parents=True, exist_ok=True)
    for png in sweep_dir.glob("*.png"):
        shutil.copy(png, images / png.name)
    write_result(out, record, machine)
    print(f"analyze {analyze_s:.1f} s ({record['cells']} cells), plan {plan_s:.1f} s")
    print("\n".join(header))
    print(f"wrote {out} and {images}/")


if __name__ == "__main__":
    main()
