"""The label-free synthetic signal of retrained models: KL and agreement with the original.

    python benchmarks/bench_synthetic_signal.py seed0.h5 seed1.h5 fixed0.h5 ...

Each MODEL.h5 (a model retrained from ``--model``, EfficientNet-Lite0 by default) is
scored against the original on 64 synthetic images made from the original alone
(batch-norm statistics matching, seed 0, 100 steps: the held-out synthetic images of
bench_label_free_imagenet.py, ``_common.synthetic_heldout``; read from the cache when made
before). ``--images 512`` scores them on 512 instead, made the same way (the same
generator, so the first 64 are those 64; about 43 minutes to make on 2 cores, once):
64 images move the KL by 2-7% between seeds of one recipe. No image of any dataset is
read. Results go to benchmarks/results/synthetic_signal.json (64 images) or
synthetic_signal_512.json, keyed by the file's name.
"""

from __future__ import annotations

from pathlib import Path

from _common import BATCH, RESULTS, parser, read_json, signal, synthetic_heldout, write_json

import qretrain
from qretrain.metrics.quality import predict

IMAGES = {64: "synthetic_signal.json", 512: "synthetic_signal_512.json"}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("models", nargs="+", metavar="MODEL.h5")
    cli.add_argument("--model", default="efficientnet-lite0", help="the original")
    cli.add_argument("--images", type=int, choices=sorted(IMAGES), default=64,
                     help="how many synthetic images to score on (default 64)")  # fmt: skip
    args = cli.parse_args()
    teacher = qretrain.load_model(args.model).eval()
    made = synthetic_heldout(teacher, args.images)
    reference, _ = predict(teacher, made, batch_size=BATCH)
    out = RESULTS / IMAGES[args.images]
    results = read_json(out, {})
    for path in args.models:
        logits, _ = predict(qretrain.load(path), made, batch_size=BATCH)
        entry = {"original": args.model, **signal(logits, reference)}
        results[Path(path).name] = entry
        print(f"{Path(path).name}: synthetic KL {entry['mean_kl']:.4f}, "
              f"agreement {entry['agreement']:.2%}")  # fmt: skip
    write_json(out, results)


if __name__ == "__main__":
    main()
