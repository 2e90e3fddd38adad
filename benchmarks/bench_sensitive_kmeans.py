"""k-means against sensitive-kmeans (Fisher-weighted) at the same plan, before retraining.

    python benchmarks/bench_sensitive_kmeans.py --imagenet ../shared/imagenet-sample-dev

EfficientNet-Lite0 clustered with each plan twice: plain 1-D k-means, and k-means
weighted by each weight's diagonal Fisher information on 128 unlabeled `natural`
pool images (labels sampled from the model's own outputs; ``compress.importance``).
Same tensors, same k, so the same file size up to gzip. Measured as loaded back from
the packed file: agreement and mean KL against the original on 96 other pool images,
and top-1 on the ImageNet evaluation set (used for nothing else) with the paired
bootstrap interval of the drop. Results: benchmarks/results/sensitive_kmeans.json.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

from _common import BATCH, RESULTS, ROOT, ImageNet, Machine, parser, write_result

import qretrain
from qretrain.metrics import agreement, mean_kl, predict, top1_drop, topk_accuracy
from qretrain.models import get_arch
from qretrain.plan import Plan

PLANS = ["examples/plans/efficientnet-lite0-auto-5x.yaml",
         "examples/plans/efficientnet-lite0-auto.yaml"]  # fmt: skip


def main() -> None:
    cli = parser(__doc__, imagenet=True)
    args = cli.parse_args()
    machine = Machine()
    model = qretrain.load_model("efficientnet-lite0").eval()
    contract = get_arch(model).contract
    fisher_data = qretrain.load_dataset("natural", contract, limit=128)
    pool = qretrain.load_dataset("natural", contract, limit=96, offset=256, seed=1)
    imagenet = ImageNet(args.imagenet, model)
    ref, labels = imagenet.reference, imagenet.labels
    pool_ref, _ = predict(model, pool, batch_size=BATCH)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for plan_path in PLANS:
            for method in ("kmeans", "sensitive-kmeans"):
                clustered = copy.deepcopy(model)
                start = time.perf_counter()
                qretrain.cluster_(clustered, Plan.load(ROOT / plan_path).with_method(method),
                                  data=fisher_data)  # fmt: skip
                seconds = time.perf_counter() - start
                saved = qretrain.save(clustered, Path(tmp) / "m.h5")
                loaded = qretrain.load(saved.path)
                pool_logits, _ = predict(loaded, pool, batch_size=BATCH)
                logits = imagenet.logits(loaded)
                drop, low, high = top1_drop(logits, ref, labels)
                rows.append({"plan": plan_path, "method": method, "file_bytes": saved.file_bytes,
                             "cluster_seconds": seconds,
                             "pool_agreement": agreement(pool_logits, pool_ref),
                             "pool_kl": mean_kl(pool_logits, pool_ref),
                             "imagenet_top1": topk_accuracy(logits, labels, 1),
                             "imagenet_agreement": agreement(logits, ref),
                             "top1_drop_points": drop, "drop_95_interval": [low, high]})  # fmt: skip
                r = rows[-1]
                print(
                    f"{Path(plan_path).stem:32s} {method:17s} {saved.file_bytes:,} B pool "
                    f"agreement {r['pool_agreement']:.2%} kl {r['pool_kl']:.3f}; ImageNet "
                    f"top-1 {r['imagenet_top1']:.2%} drop {drop:+.1f} [{low:+.1f}, {high:+.1f}]"
                )
    record = {"original_top1": imagenet.original_top1, "rows": rows}
    write_result(RESULTS / "sensitive_kmeans.json", record, machine)


if __name__ == "__main__":
    main()
