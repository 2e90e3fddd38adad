"""EfficientNet-Lite0, clustered 5.48x, retrained label-free on video frames only.

    python benchmarks/bench_retrain_effnet.py train [--device cuda] [--epochs 30]
    python benchmarks/bench_retrain_effnet.py evaluate

The seed's own setting: an ImageNet model retrained without a single ImageNet
image. Student: efficientnet-lite0 clustered with
examples/plans/efficientnet-lite0-auto-5x.yaml (an automatic plan at coremltools'
4-bit file size: 3,427,853 bytes, 5.48x smaller than float32). Retraining data: 400
frames of `opencv-frames:video` (seed 0), labels none. Variants: batch-norm
statistics frozen (the default) or updated, and --tune-centroids on the frozen one.

evaluate (CPU) measures on images no variant trained on: top-1 on the 20 labeled
`foolbox-imagenet` images, agreement with the original on them, on the 20 natural
photos of `opencv-frames:photos`, and on the other 167 video frames (offset 400).
Results: benchmarks/results/retrain_effnet.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from _common import PLANS, RESULTS, ROOT, Machine, parser, write_json, write_result

import qretrain
from qretrain.metrics.quality import agreement, predict, topk_accuracy
from qretrain.models import get_arch

PLAN = PLANS / "efficientnet-lite0-auto-5x.yaml"
OUT = RESULTS / "retrain_effnet.json"
VARIANTS = {
    "frozen": {"bn_stats": "frozen"},
    "frozen-tune-centroids": {"bn_stats": "frozen", "tune_centroids": True},
    "update": {"bn_stats": "update"},
}
TRAIN = {"spec": "opencv-frames:video", "limit": 400, "seed": 0}
HELD_OUT_FRAMES = {"spec": "opencv-frames:video", "limit": 167, "seed": 0, "offset": 400}


def train(args: argparse.Namespace) -> None:
    machine = Machine(args.device)
    teacher = qretrain.load_model("efficientnet-lite0").eval()
    student = copy.deepcopy(teacher)
    qretrain.cluster_(student, PLAN)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    qretrain.save(student, out / "clustered.h5")
    contract = get_arch(teacher).contract
    limit = args.limit or TRAIN["limit"]
    data = qretrain.load_dataset(TRAIN["spec"], contract, limit=limit, seed=TRAIN["seed"])
    for name, settings in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        config = qretrain.RetrainConfig(epochs=args.epochs, batch_size=32, lr=args.lr,
                                        trainable="unclustered", seed=0, **settings)  # fmt: skip
        start = time.perf_counter()
        try:
            result = qretrain.retrain(qretrain.load(out / "clustered.h5"), teacher, data, config,
                                      device=args.device, progress=False)  # fmt: skip
        except Exception as e:  # one failing variant must not cost the others' device time
            print(f"{name}: FAILED: {type(e).__name__}: {e}")
            continue
        name = f"{name}-{args.tag}" if args.tag else name
        file = out / f"{name}.h5"
        saved = qretrain.save(result.model.cpu(), file)
        record = {"variant": name, "device": str(args.device),
                  "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
                  "file_bytes": saved.file_bytes, "seconds": time.perf_counter() - start,
                  "machine": machine.at_end(), **result.record}  # fmt: skip
        write_json(out / f"{name}.json", record)
        print(f"{name}: monitor {record['quality_before']:.2%} -> {record['quality_after']:.2%} "
              f"in {record['wall_seconds']:.1f} s")  # fmt: skip


def evaluate(args: argparse.Namespace) -> None:
    machine = Machine()
    out = Path(args.out)
    original = qretrain.load_model("efficientnet-lite0").eval()
    contract = get_arch(original).contract
    sets = {
        "foolbox-imagenet": qretrain.load_dataset("foolbox-imagenet", contract),
        "opencv photos": qretrain.load_dataset("opencv-frames:photos", contract),
        "held-out frames": qretrain.load_dataset(
            HELD_OUT_FRAMES["spec"], contract, limit=HELD_OUT_FRAMES["limit"],
            seed=HELD_OUT_FRAMES["seed"], offset=HELD_OUT_FRAMES["offset"]),
    }  # fmt: skip
    reference = {name: predict(original, ds) for name, ds in sets.items()}
    models = {"original": original, "clustered": qretrain.load(out / "clustered.h5")}
    # Every retrained model in the folder: the variants, and tagged runs with other
    # --lr / --epochs (docs/BENCHMARKS.md lists them).
    runs = sorted(p.stem for p in out.glob("*.json"))
    models.update({v: qretrain.load(out / f"{v}.h5") for v in runs})
    rows = {}
    for name, model in models.items():
        row = {}
        for set_name, ds in sets.items():
            logits, labels = predict(model, ds)
            ref_logits, _ = reference[set_name]
            row[f"agreement {set_name}"] = agreement(logits, ref_logits)
            if ds.labeled:
                row[f"top1 {set_name}"] = topk_accuracy(logits, labels, 1)
        n = sum(len(ds) for ds in sets.values())
        row["agreement all held-out"] = sum(
            row[f"agreement {s}"] * len(ds) for s, ds in sets.items()) / n  # fmt: skip
        rows[name] = row
        print(name, {k: round(v, 4) for k, v in row.items()})
    lost = 1 - rows["clustered"]["agreement all held-out"]
    records = {v: json.loads((out / f"{v}.json").read_text()) for v in runs}
    result = {
        "command": "python benchmarks/bench_retrain_effnet.py train --device cuda && "
                   "python benchmarks/bench_retrain_effnet.py evaluate",
        "plan": str(PLAN.relative_to(ROOT)),
        "train_data": TRAIN,
        "held_out_frames": HELD_OUT_FRAMES,
        "models": rows,
        "recovered_share": {v: (rows[v]["agreement all held-out"]
                                - rows["clustered"]["agreement all held-out"]) / lost
                            for v in runs},
        "runs": {v: {k: r[k] for k in ("device", "gpu", "file_bytes", "wall_seconds",
                                        "cache_seconds", "quality_before", "quality_after",
                                        "config", "history")}
                 for v, r in records.items()},
    }  # fmt: skip
    write_result(OUT, result, machine)  # the machine that evaluated; each run's is in its JSON
    print(json.dumps(result["recovered_share"], indent=2))
    print(f"wrote {OUT}")


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("stage", choices=["train", "evaluate"])
    cli.add_argument("--device", default="cpu")
    cli.add_argument("--epochs", type=int, default=30)
    cli.add_argument("--lr", type=float, default=1e-3)
    cli.add_argument("--out", default="out/bench-retrain-effnet")
    cli.add_argument("--limit", type=int, help="fewer training frames (a smoke test)")
    cli.add_argument("--only", nargs="*", choices=list(VARIANTS), help="train these only")
    cli.add_argument(
        "--tag",
        help="suffix of the output names (runs with other --lr, "
        "--epochs land beside the others, and evaluate reads them all)",
    )
    args = cli.parse_args()
    train(args) if args.stage == "train" else evaluate(args)


if __name__ == "__main__":
    main()
