"""EfficientNet-Lite0 retrained without ImageNet, judged on the ImageNet evaluation set.

    python benchmarks/bench_label_free_imagenet.py --imagenet ../shared/imagenet-sample-dev \\
        --plan examples/plans/efficientnet-lite0-auto.yaml --variant blocks-pool

The student is the model clustered with PLAN and loaded back from its packed file
(batch norm folded, as users get it); the teacher is the original. Retraining reads
only non-ImageNet images (VARIANTS says which); the evaluation set (500 labeled
ImageNet images, one per even class; read its README) is read by nothing but the
final measurement: top-1, top-5, agreement and mean KL with the original, and the
top-1 drop with a paired 95% bootstrap interval over images (2,000 resamples, seed
0). Next to it, the label-free signals that settings are chosen by: agreement and
mean KL with the original on the 138 pool images no variant retrains on
(``pool_heldout``: ``natural`` from offset 512 of the seed-0 permutation; mostly
video frames next to training frames, so not independent of them, docs/BENCHMARKS.md;
``by_source`` splits it into those frames and the 16 photographs), and on 64
synthetic images made from the original (``synthetic_heldout``: seed 0, 100 steps;
recorded when the variant does not train on them). Wall time of the retraining and
the process's peak RSS are recorded. Each run adds one entry
to benchmarks/results/label_free_imagenet.json (keyed by plan and variant).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from pathlib import Path

import torch
from _common import (
    BATCH,
    RESULTS,
    ImageNet,
    Machine,
    float32_bytes,
    parser,
    peak_rss_mib,
    read_json,
    signal,
    synthetic_heldout,
    write_json,
)

import qretrain
from qretrain.assets.pools.opencv import opencv_paths
from qretrain.data.synthetic import synthesize
from qretrain.metrics.quality import mean_kl, predict
from qretrain.models import get_arch

OUT = RESULTS / "label_free_imagenet.json"
POOL = {"spec": "natural", "limit": 512, "seed": 0}
HELDOUT = {"spec": "natural", "offset": 512, "limit": 138, "seed": 0}  # the rest of the pool
VARIANTS = {
    "none": None,  # the clustered model as it is
    "output-pool": {"data": POOL, "config": {"objective": "output", "epochs": 10, "lr": 3e-4}},
    "blocks-pool": {"data": POOL, "config": {"objective": "blocks", "block_epochs": 4,
                                             "lr": 3e-4, "tune_centroids": True}},
    "blocks-views": {"data": {**POOL, "views": 1024},
                     "config": {"objective": "blocks", "block_epochs": 4, "lr": 3e-4,
                                "tune_centroids": True}},
    "output-views": {"data": {**POOL, "views": 1024},
                     "config": {"objective": "output", "epochs": 10, "lr": 3e-4}},
    "blocks-frames": {"data": {"spec": "opencv-frames:video", "limit": 512, "seed": 0},
                      "config": {"objective": "blocks", "block_epochs": 4, "lr": 3e-4,
                                 "tune_centroids": True}},
    "output-frames": {"data": {"spec": "opencv-frames:video", "limit": 512, "seed": 0},
                      "config": {"objective": "output", "epochs": 10, "lr": 3e-4}},
    "output-synthetic": {"data": {"spec": "synthetic:64"},
                         "config": {"objective": "output", "epochs": 10, "lr": 3e-4}},
    "blocks-synthetic": {"data": {"spec": "synthetic:64"},
                         "config": {"objective": "blocks", "block_epochs": 4, "lr": 3e-4,
                                    "tune_centroids": True}},
    "blocks+output-pool": {"data": POOL, "config": {"objective": "blocks+output",
                                                    "block_epochs": 4, "epochs": 3, "lr": 3e-4,
                                                    "tune_centroids": True}},
    "blocks+output-views": {"data": {**POOL, "views": 1024},
                            "config": {"objective": "blocks+output", "block_epochs": 4,
                                       "epochs": 3, "lr": 3e-4, "tune_centroids": True}},
    "blocks+output-synthetic": {"data": {"spec": "synthetic:64"},
                                "config": {"objective": "blocks+output", "block_epochs": 4,
                                           "epochs": 3, "lr": 3e-4, "tune_centroids": True}},
    # a list: the sets joined, in order (qretrain.data.joined)
    "output-synthetic+pool": {"data": [{"spec": "synthetic:64"}, POOL],
                              "config": {"objective": "output", "epochs": 10, "lr": 3e-4}},
}  # fmt: skip


def refs_of(variant: dict | None) -> list[dict]:
    """The data references a variant retrains on (a list: the sets joined, in order)."""
    if variant is None:
        return []
    return variant["data"] if isinstance(variant["data"], list) else [variant["data"]]


def load_part(ref: dict, contract, teacher: torch.nn.Module, steps: int):
    """One part of a variant's data; synthetic images made from ``teacher`` with
    ``steps`` Adam steps per batch (as ``load_dataset("synthetic:N")`` makes them at
    its default steps)."""
    if ref["spec"].startswith("synthetic:"):
        return synthesize(teacher, int(ref["spec"].split(":")[1]), ref.get("seed", 0), steps)
    return qretrain.load_dataset(ref["spec"], contract, limit=ref.get("limit"),
                                 seed=ref.get("seed", 0), views=ref.get("views"))  # fmt: skip


def sources(heldout) -> dict[str, torch.Tensor]:
    """Rows of the held-out pool images by kind: video frames (most have a neighbouring
    frame among the training images) and photographs (each a picture of its own)."""
    video = set(opencv_paths("video"))
    frames = torch.tensor([p in video for p in heldout.paths])
    return {"frames": frames.nonzero()[:, 0], "photographs": (~frames).nonzero()[:, 0]}


def summary(entry: dict) -> str:
    """One line: the ImageNet figures, then the label-free signals next to them."""
    lo, hi = entry["drop_95_interval"]
    imagenet = (f"{entry['times_smaller']:.2f}x, top-1 {entry['top1']:.2%} (original "
                f"{entry['original_top1']:.2%}), drop {entry['top1_drop_points']:+.1f} "
                f"[{lo:+.1f}, {hi:+.1f}], agreement {entry['agreement']:.2%}, "
                f"KL {entry['mean_kl']:.4f}")  # fmt: skip
    parts = [imagenet]
    held = entry["pool_heldout"]
    signals = {"held-out pool": held, "its photographs": held["by_source"]["photographs"],
               "synthetic": entry["synthetic_heldout"]}  # fmt: skip
    parts += [f"{name} agreement {s['agreement']:.2%}, KL {s['mean_kl']:.4f}"
              for name, s in signals.items() if s is not None]  # fmt: skip
    parts.append(f"retrain {entry['retrain_seconds']:.0f} s, peak {entry['peak_rss_mib']:.0f} MiB")
    return "; ".join(parts)


def main() -> None:
    cli = parser(__doc__, imagenet=True)
    cli.add_argument("--plan", required=True)
    cli.add_argument("--model", default="efficientnet-lite0")
    cli.add_argument("--variant", choices=list(VARIANTS), required=True)
    cli.add_argument("--device", default="cpu")
    cli.add_argument(
        "--synthetic-steps", type=int, default=100, help="Adam steps per batch of synthetic images"
    )
    cli.add_argument(
        "--synthetic-images",
        type=int,
        default=64,
        help="how many synthetic images the synthetic variants use",
    )
    cli.add_argument(
        "--views",
        type=int,
        default=None,
        help="how many augmented views the *-views variants use (1024)",
    )
    cli.add_argument(
        "--rounding-lambda",
        type=float,
        default=None,
        help="weight of the learned assignments' rounding term "
        "(RetrainConfig.rounding_lambda; same as --set rounding_lambda=X)",
    )
    cli.add_argument(
        "--pool-limit",
        type=int,
        default=None,
        help="retrain on the first N of the pool's 512 images (a subset of "
        "them; the held-out images stay the same)",
    )
    cli.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override a retrain setting (JSON value), e.g. lr=1e-3",
    )
    args = cli.parse_args()
    machine = Machine(args.device)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    variant = copy.deepcopy(VARIANTS[args.variant])
    for ref in refs_of(variant):
        if ref["spec"].startswith("synthetic"):
            ref["spec"] = f"synthetic:{args.synthetic_images}"
        if "views" in ref and args.views is not None:
            ref["views"] = args.views
        if ref.get("spec") == "natural" and args.pool_limit is not None:
            if not 1 <= args.pool_limit <= POOL["limit"]:
                cli.error(
                    f"--pool-limit must be 1 .. {POOL['limit']} (the held-out images "
                    f"start at {HELDOUT['offset']}); got {args.pool_limit}"
                )
            ref["limit"] = args.pool_limit
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.rounding_lambda is not None:
        overrides["rounding_lambda"] = args.rounding_lambda
    teacher = qretrain.load_model(args.model).eval()
    contract = get_arch(teacher).contract
    float32 = float32_bytes(teacher)
    with tempfile.TemporaryDirectory() as tmp:
        student = copy.deepcopy(teacher)
        qretrain.cluster_(student, args.plan, progress=False)
        qretrain.save(student, Path(tmp) / "clustered.h5")
        student = qretrain.load(Path(tmp) / "clustered.h5")
        record, seconds, data_seconds = None, 0.0, 0.0
        if variant is not None:
            config = qretrain.RetrainConfig(**{"batch_size": 32, **variant["config"], **overrides})
            loading = time.perf_counter()  # synthetic data is made here (or read from its cache)
            parts = [load_part(ref, contract, teacher, args.synthetic_steps)
                     for ref in refs_of(variant)]  # fmt: skip
            data = parts[0] if len(parts) == 1 else qretrain.data.joined(*parts)
            data.labels = None
            data_seconds = time.perf_counter() - loading
            start = time.perf_counter()
            result = qretrain.retrain(student, teacher, data, config, device=args.device,
                                      progress=False)  # fmt: skip
            seconds = time.perf_counter() - start
            record = result.record
        saved = qretrain.save(student.cpu(), Path(tmp) / "retrained.h5")
        model = qretrain.load(saved.path)
    heldout = qretrain.load_dataset(HELDOUT["spec"], contract, HELDOUT["limit"], HELDOUT["seed"],
                                    HELDOUT["offset"])  # fmt: skip
    pool_reference, _ = predict(teacher, heldout, batch_size=BATCH)
    pool_logits, _ = predict(model, heldout, batch_size=BATCH)
    synthetic = None  # made from the teacher alone; held out unless the variant trains on it
    if not any(ref["spec"].startswith("synthetic") for ref in refs_of(variant)):
        made = synthetic_heldout(teacher)
        synthetic = signal(predict(model, made, batch_size=BATCH)[0],
                           predict(teacher, made, batch_size=BATCH)[0])  # fmt: skip
    imagenet = ImageNet(args.imagenet, teacher)
    logits = imagenet.logits(model)
    entry = {
        "plan": args.plan, "variant": args.variant, "overrides": overrides,
        "rounding_lambda": record["config"]["rounding_lambda"] if record else None,
        "retrain_config": record["config"] if record else None,
        "retrain_data": variant["data"] if variant else None,
        "synthetic_steps": args.synthetic_steps if "synthetic" in args.variant else None,
        "file_bytes": saved.file_bytes, "times_smaller": float32 / saved.file_bytes,
        "original_top1": imagenet.original_top1,
        **imagenet.scores(logits),
        # evaluation only, like every ImageNet figure
        "mean_kl": mean_kl(logits, imagenet.reference),
        "pool_heldout": {**signal(pool_logits, pool_reference),
                         "by_source": {name: signal(pool_logits[rows], pool_reference[rows])
                                       for name, rows in sources(heldout).items()}},
        "synthetic_heldout": synthetic,
        "retrain_seconds": seconds,
        "data_seconds": data_seconds,
        "blocks": record.get("blocks") if record else None,
        "peak_rss_mib": peak_rss_mib(),
        "machine": machine.at_end(),
    }  # fmt: skip
    results = read_json(OUT, {})
    key = f"{Path(args.plan).stem} {args.variant}" + "".join(f" {s}" for s in args.set)
    if "synthetic" in args.variant and args.synthetic_images != 64:
        key += f" synthetic:{args.synthetic_images}"
    if "views" in args.variant and args.views is not None:
        key += f" views:{args.views}"
    if args.rounding_lambda is not None:
        key += f" rounding_lambda={args.rounding_lambda:g}"
    if args.pool_limit is not None:
        key += f" pool_limit={args.pool_limit}"
    results[key] = entry
    write_json(OUT, results)
    print(f"{key}: {summary(entry)}")


if __name__ == "__main__":
    main()
