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

import copy
import tempfile
from pathlib import Path

from _common import (
    PLANS,
    RESULTS,
    ImageNet,
    Machine,
    float32_bytes,
    parser,
    write_result,
)

import qretrain


def main() -> None:
    cli = parser(__doc__, imagenet=True)
    args = cli.parse_args()
    machine = Machine()
    model = qretrain.load_model("efficientnet-lite0")
    imagenet = ImageNet(args.imagenet, model)
    float32 = float32_bytes(model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base_bytes = qretrain.save(model, Path(tmp) / "original.h5").file_bytes
        rows.append(imagenet.row("original", imagenet.reference, base_bytes, float32))
        for plan in sorted(PLANS.glob("efficientnet-lite0-*.yaml")):
            clustered = copy.deepcopy(model)
            qretrain.cluster_(clustered, plan, progress=False)
            saved = qretrain.save(clustered, Path(tmp) / f"{plan.stem}.h5")
            # What a user gets: the model as loaded back from its file.
            logits = imagenet.logits(qretrain.load(saved.path))
            rows.append(imagenet.row(plan.name, logits, saved.file_bytes, float32))
            print(f"{plan.name}: {rows[-1]['top1']:.2%} top-1, {rows[-1]['times_smaller']:.2f}x")
    record = {"data": imagenet.data.describe(), "float32_bytes": float32, "rows": rows}
    write_result(RESULTS / "imagenet_eval.json", record, machine)
    for r in rows:
        lo, hi = r["drop_95_interval"]
        print(f"{r['model']:35s} {r['times_smaller']:5.2f}x top-1 {r['top1']:.2%} top-5 "
              f"{r['top5']:.2%} agreement {r['agreement']:.2%} drop {r['top1_drop_points']:+.1f} "
              f"[{lo:+.1f}, {hi:+.1f}]")  # fmt: skip


if __name__ == "__main__":
    main()
