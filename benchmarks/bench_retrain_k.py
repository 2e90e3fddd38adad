"""Label-free retraining epoch by epoch for several k (the seed's Figures 9 and 14).

    python benchmarks/bench_retrain_k.py --teacher vgg      # Figure 9's counterpart
    python benchmarks/bench_retrain_k.py --teacher resnet   # Figure 14's counterpart

For each k, the 15-epoch teacher's middle weights are clustered to k values per
tensor (VGG-style: layers 2-5, as the seed's VGG-16 plan clustered its large layers;
ResNet-style: every conv of stages 2 and 3, batch norm untouched, as its layers
13-49), then retrained label-free (trainable: every unclustered parameter, KL at
T=2) on 20,000 Fashion-MNIST training images with their labels withheld. The curve
is top-1 on 2,000 other labeled training images after every epoch (epoch 0: the
clustered start); the test set gives the final top-1. Results go to
benchmarks/results/retrain_k_<teacher>.json and docs/img/retrain-k-<teacher>.png.
"""

from __future__ import annotations

import copy
import json

from _common import RESULTS, ROOT, Machine, parser, write_result

import qretrain
from qretrain.models import get_arch
from qretrain.report.figures import quality_per_epoch

KS = (2, 4, 8, 16, 32)
RULES = {
    "vgg": {"layers": "2-5", "kinds": ["weight"]},
    "resnet": {"name": "layer[23].*", "type": "Conv2d", "kinds": ["weight"]},
}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--teacher", choices=list(RULES), required=True)
    cli.add_argument("--epochs", type=int, default=4)
    cli.add_argument(
        "--replot",
        action="store_true",
        help="redraw the PNG from the results JSON, without retraining",
    )
    args = cli.parse_args()
    machine = Machine()
    if args.replot:
        replot(args.teacher)
        return
    teacher = qretrain.load_model(f"teacher:{args.teacher}").eval()
    contract = get_arch(teacher).contract
    data = qretrain.load_dataset("fashion-mnist:train", contract, limit=20000, offset=4000)
    data.labels = None  # label-free
    monitor = qretrain.load_dataset("fashion-mnist:train", contract, limit=2000, offset=24000)
    test = qretrain.load_dataset("fashion-mnist:test", contract)
    original = qretrain.evaluate(teacher, test).top1
    runs, finals = {}, {}
    for k in KS:
        student = copy.deepcopy(teacher)
        qretrain.cluster_(student, {"rules": [{**RULES[args.teacher], "k": k}]})
        start = qretrain.evaluate(student, test).top1
        result = qretrain.retrain(student, teacher, data,
                                  qretrain.RetrainConfig(epochs=args.epochs, seed=0),
                                  val_data=monitor, progress=False)  # fmt: skip
        after = qretrain.evaluate(result.model, test).top1
        runs[f"k{k}"] = result.record
        finals[k] = {"test_top1_clustered": start, "test_top1_retrained": after,
                     "best_epoch": result.record.get("best_epoch"),
                     "wall_seconds": result.record["wall_seconds"]}  # fmt: skip
        print(f"k={k}: test top-1 {start:.2%} -> {after:.2%} (original {original:.2%})")
    labels = {f"k{k}": f"k={k}" for k in KS}
    image = ROOT / "docs" / "img" / f"retrain-k-{args.teacher}.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    quality_per_epoch(runs, labels, image)
    out = write_result(RESULTS / f"retrain_k_{args.teacher}.json", {
        "command": f"python benchmarks/bench_retrain_k.py --teacher {args.teacher}",
        "rule": RULES[args.teacher], "epochs": args.epochs, "test_top1_original": original,
        "per_k": finals,
        "curves": {k: [r["quality_before"]] + [h["monitor"] for h in r["history"]]
                   for k, r in runs.items()},
    }, machine)  # fmt: skip
    print(f"wrote {out} and {image}")


def replot(teacher: str) -> None:
    record = json.loads((RESULTS / f"retrain_k_{teacher}.json").read_text())
    runs = {
        k: {"quality_before": curve[0], "monitor_metric": "accuracy",
            "history": [{"epoch": i + 1, "monitor": q} for i, q in enumerate(curve[1:])]}
        for k, curve in record["curves"].items()
    }  # fmt: skip
    labels = {k: f"k={k.removeprefix('k')}" for k in runs}
    quality_per_epoch(runs, labels, ROOT / "docs" / "img" / f"retrain-k-{teacher}.png")


if __name__ == "__main__":
    main()
