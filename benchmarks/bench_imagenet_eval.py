"""EfficientNet-Lite0 and its committed plans on the ImageNet evaluation set.

    python benchmarks/bench_imagenet_eval.py --imagenet ../shared/imagenet-sample-dev

The evaluation set (500 labeled ImageNet images, one per even class; read its
README) is used for nothing but this measurement: the plans were made without it.
For the original and each plan in examples/plans/efficientnet-lite0-*.yaml: the
packed file's size, top-1 and top-5 of the model loaded back from it, top-1 agreement with the original, and the
top-1 drop with a 95% bootstrap interval over images (paired: the same resampled
images for both models; 2,000 resamples, seed 0). 500 images move top-1 in steps
of 0.2 points. Results: benchmarks/results/imagenet_eval.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import qretrain
from qretrain.metrics.quality import agreement, predict, top1_drop, topk_accuracy
from qretrain.models import get_arch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "imagenet_eval.json"


def scores(logits, labels, reference) -> dict:
    """Every ImageNet figure the benchmarks report for one model: top-1, top-5, top-1
    agreement with ``reference`` (the original's logits), and the top-1 drop against
    it with its paired 95% bootstrap interval (``metrics.top1_drop``)."""
    drop, lo, hi = top1_drop(logits, reference, labels)
    return {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5),
            "agreement": agreement(logits, reference), "top1_drop_points": drop,
            "drop_95_interval": [lo, hi]}  # fmt: skip


def row(name: str, logits, labels, reference, file_bytes: int, float32: int) -> dict:
    return {"model": name, "file_bytes": file_bytes, "times_smaller": float32 / file_bytes,
            **scores(logits, labels, reference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imagenet", required=True, help="path of imagenet-sample-dev")
    args = parser.parse_args()
    model = qretrain.load_model("efficientnet-lite0")
    data = qretrain.load_dataset(args.imagenet, get_arch(model).contract)
    start = time.perf_counter()
    reference, labels = predict(model, data, batch_size=32)
    float32 = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base_bytes = qretrain.save(model, Path(tmp) / "original.h5").file_bytes
        rows.append(row("original", reference, labels, reference, base_bytes, float32))
        for plan in sorted((ROOT / "examples" / "plans").glob("efficientnet-lite0-*.yaml")):
            clustered = copy.deepcopy(model)
            qretrain.cluster_(clustered, plan, progress=False)
            saved = qretrain.save(clustered, Path(tmp) / f"{plan.stem}.h5")
            # What a user gets: the model as loaded back from its file.
            logits, _ = predict(qretrain.load(saved.path), data, batch_size=32)
            rows.append(row(plan.name, logits, labels, reference, saved.file_bytes, float32))
            print(f"{plan.name}: {rows[-1]['top1']:.2%} top-1, {rows[-1]['times_smaller']:.2f}x")
    record = {"data": data.describe(), "float32_bytes": float32, "rows": rows,
              "seconds": time.perf_counter() - start, "machine": platform.machine(),
              "threads": torch.get_num_threads()}  # fmt: skip
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    for r in rows:
        lo, hi = r["drop_95_interval"]
        print(f"{r['model']:35s} {r['times_smaller']:5.2f}x top-1 {r['top1']:.2%} top-5 "
              f"{r['top5']:.2%} agreement {r['agreement']:.2%} drop {r['top1_drop_points']:+.1f} "
              f"[{lo:+.1f}, {hi:+.1f}]")  # fmt: skip


if __name__ == "__main__":
    main()
