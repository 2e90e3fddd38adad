"""Which architecture families pass which stage: the coverage table of docs/ARCHITECTURES.md.

    python benchmarks/bench_families.py                 # every family, then the 224-px figures
    python benchmarks/bench_families.py --families swin_t --no-full-size

Each family of ``qretrain.testing.families`` (torchvision's builders, random weights,
10 classes, 32-px inputs, ImageNet mean and std) goes through compress (every conv,
linear and attention weight at k = 16, k-means), reopen, block-wise and output
retraining (one pass on --images random images), and the ONNX, Core ML and TorchScript
exports (each checked against the model before it is kept). A cell is "pass", with the
file's size ratio to float32 where there is a file, or the one line the stage failed
with. Then, at 224 px: the packed file's ratio for vit_b_16 and swin_t clustered the
same way, and what one block-wise pass of vit_b_16 costs per image.
Results: benchmarks/results/families.json; the table is printed as markdown.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import RESULTS, Machine, parser, write_result

import qretrain
from qretrain.cluster.state import clusters_of
from qretrain.data.sets import TensorImageSet
from qretrain.testing.families import FAMILIES, STAGES, Trial, float32_bytes, plan

HEADERS = {"compress": "compress (file vs float32)", "reopen": "reopen",
           "blocks": "block-wise", "output": "output retraining", "onnx": "onnx",
           "coreml": "coreml", "torchscript": "torchscript"}  # fmt: skip
FULL_SIZE = ("torchvision:vit_b_16", "torchvision:swin_t")


def coverage(names: list[str], images: int) -> list[dict]:
    rows = []
    for name in names:
        family = FAMILIES[name]
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            trial = Trial(family, folder, images=images)
            outcomes = trial.run()
            params = sum(p.numel() for p in trial.teacher.parameters())
        row = {"family": name, "spec": family.spec, "kwargs": family.kwargs,
               "size": family.size, "parameters": params,
               "seconds": round(time.perf_counter() - start, 1),
               "stages": {s: o.to_dict() for s, o in outcomes.items()}}  # fmt: skip
        print(f"{name}: " + "; ".join(f"{s} {o.cell()}" for s, o in outcomes.items()), flush=True)
        rows.append(row)
    return rows


def full_size(spec: str, folder: Path) -> tuple[dict, torch.nn.Module, torch.nn.Module]:
    """The packed file's ratio at the architecture's own size (224 px, 1,000 classes);
    returns the record, the teacher and the clustered student."""
    torch.manual_seed(0)
    teacher = qretrain.build_model(spec).eval()
    student = copy.deepcopy(teacher)
    start = time.perf_counter()
    qretrain.cluster_(student, plan(), warn_larger=False)
    cluster_seconds = time.perf_counter() - start
    saved = qretrain.save(student, folder / "model.h5")
    clustered = clusters_of(student)
    left = {n: t.numel() for n, t in student.state_dict().items()
            if n not in clustered and t.is_floating_point()}  # fmt: skip
    record = {"spec": spec, "parameters": sum(p.numel() for p in student.parameters()),
              "float32_bytes": float32_bytes(student), "file_bytes": saved.file_bytes,
              "ratio": float32_bytes(student) / saved.file_bytes,
              "clustered_tensors": len(clustered), "float32_values_left": sum(left.values()),
              "largest_left": sorted(left, key=left.get, reverse=True)[:3],
              "cluster_seconds": round(cluster_seconds, 1)}  # fmt: skip
    print(f"{spec} at 224 px: {record['ratio']:.2f}x ({saved.file_bytes:,} bytes)", flush=True)
    return record, teacher, student


def block_pass_cost(teacher, student, images: int) -> dict:
    """One block-wise pass (block_epochs 1) on ``images`` random 224-px images: the
    block stage's seconds, in all and per image."""
    contract = qretrain.models.get_arch(teacher).contract
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, 256, 256), generator=g, dtype=torch.uint8)
    data = TensorImageSet("random", None, contract, images=pixels)
    config = qretrain.RetrainConfig(objective="blocks", block_epochs=1, batch_size=images)
    start = time.perf_counter()
    result = qretrain.retrain(student, teacher, data, config, progress=False)
    wall = time.perf_counter() - start
    blocks = result.record["blocks"]
    record = {"images": images, "blocks": len(blocks["blocks"]),
              "block_stage_seconds": round(blocks["seconds"], 1),
              "wall_seconds": round(wall, 1),
              "seconds_per_image": round(blocks["seconds"] / images, 1),
              "slowest_blocks": sorted(((round(h["seconds"], 1), h["name"])
                                        for h in blocks["history"]), reverse=True)[:3]}  # fmt: skip
    print(
        f"vit_b_16 block-wise, one pass on {images} images: {record['block_stage_seconds']} s "
        f"({record['seconds_per_image']} s per image)",
        flush=True,
    )
    return record


def markdown(rows: list[dict]) -> str:
    """The table; a failure's cell points to its one line, listed below the table."""
    lines = ["| family | parameters | " + " | ".join(HEADERS[s] for s in STAGES) + " |",
             "|---|---:|" + "---|" * len(STAGES)]  # fmt: skip
    failures = []
    for row in rows:
        cells = []
        for stage in STAGES:
            o = row["stages"][stage]
            if o["ok"]:
                cells.append("pass" + (f" ({o['note']})" if o["note"] else ""))
            else:
                failures.append(f"{len(failures) + 1}. {row['family']}, {stage}: {o['note']}")
                cells.append(f"fails ({len(failures)})")
        lines.append(f"| {row['family']} | {row['parameters']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ([""] + failures if failures else []))


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    cli.add_argument("--images", type=int, default=8, help="retraining images per family")
    cli.add_argument(
        "--no-full-size",
        action="store_true",
        help="skip the 224-px ratios and the vit_b_16 block-wise timing",
    )
    cli.add_argument(
        "--vit-images", type=int, default=2, help="images of the vit_b_16 block-wise timing"
    )
    args = cli.parse_args()
    machine = Machine()
    warnings.filterwarnings("ignore")  # tracer and converter warnings: the cells say what failed
    logging.basicConfig(level=logging.ERROR)
    record = {"families": coverage(args.families, args.images)}
    if not args.no_full_size:
        record["full_size"] = []
        with tempfile.TemporaryDirectory() as folder:
            for spec in FULL_SIZE:
                row, teacher, student = full_size(spec, Path(folder))
                if spec == "torchvision:vit_b_16":
                    row["block_pass"] = block_pass_cost(teacher, student, args.vit_images)
                    # a shared machine is slower: the load says how busy it was
                    row["block_pass"]["load_average"] = round(os.getloadavg()[0], 1)
                record["full_size"].append(row)
                del teacher, student
    write_result(RESULTS / "families.json", record, machine)
    print()
    print(markdown(record["families"]))


if __name__ == "__main__":
    main()
