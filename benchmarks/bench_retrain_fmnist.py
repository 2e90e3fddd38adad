"""Label-free vs conventional retraining of a clustered Fashion-MNIST teacher.

The seed's comparison at a scale this machine runs to completion: the reference
teacher (trained once and cached), clustered with a plan; then, with the same epochs,
the same images and the same seed:
  label-free, trainable=last         (the seed's method: teacher outputs, no labels)
  label-free, trainable=unclustered
  conventional, trainable=unclustered (cross-entropy on the same images' labels)
each evaluated by top-1 on the full fashion-mnist:test (10,000 images, never used
for training). Writes benchmarks/results/retrain_<teacher>.json and the seed's
Figures 9/14 (epochs), 15 (before/after) and 16 (time) as
docs/img/retrain-<teacher>-{epochs,before-after,time}.png.

    python benchmarks/bench_retrain_fmnist.py --teacher vgg \\
        --plan examples/plans/vgg-small-fmnist.yaml --epochs 30
    python benchmarks/bench_retrain_fmnist.py --teacher vgg --replot   # figures only
"""

from __future__ import annotations

import copy
import json
import time

from _common import RESULTS, ROOT, Machine, parser, reference_teacher, write_result

import qretrain
from qretrain.data import load_dataset
from qretrain.models import get_arch
from qretrain.report.figures import before_after, quality_per_epoch, retrain_time

FIGURES = ROOT / "docs" / "img"
RUNS = [
    ("label-free, last", {"trainable": "last"}),
    ("label-free, unclustered", {"trainable": "unclustered"}),
    ("conventional, unclustered", {"trainable": "unclustered", "labels": True}),
    (
        "label-free, blocks",
        {"trainable": "unclustered", "objective": "blocks", "tune_centroids": True},
    ),
]


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--teacher", choices=["vgg", "resnet"], default="vgg")
    cli.add_argument("--plan")
    cli.add_argument("--epochs", type=int, default=5)
    cli.add_argument("--train-limit", type=int, help="images of fashion-mnist:train")
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument(
        "--teacher-epochs",
        type=int,
        help="the cached teacher of this many epochs (default: the reference one)",
    )
    cli.add_argument(
        "--runs",
        nargs="*",
        choices=[name for name, _ in RUNS],
        help="only these runs (conventional always runs: the anchor)",
    )
    cli.add_argument("--block-epochs", type=int, default=4, help="passes per block")
    cli.add_argument(
        "--block-images",
        type=int,
        help="the block-wise run sees only the first N of the training images",
    )
    cli.add_argument("--block-batch", type=int, help="batch size of the block-wise run")
    cli.add_argument("--tag", help="results/retrain_<teacher>_<tag>.json; figures not drawn")
    cli.add_argument(
        "--replot", action="store_true", help="only redraw the figures from the JSON record"
    )
    args = cli.parse_args()
    machine = Machine()
    path = RESULTS / f"retrain_{args.teacher}{'_' + args.tag if args.tag else ''}.json"
    if args.replot:
        plot(json.loads(path.read_text()), args.teacher)
        return
    if not args.plan:
        cli.error("--plan is required (unless --replot)")

    teacher = reference_teacher(args.teacher, args.teacher_epochs)
    contract = get_arch(teacher).contract
    test = load_dataset("fashion-mnist:test", contract)
    train = load_dataset("fashion-mnist:train", contract, limit=args.train_limit, seed=args.seed)
    unlabeled = copy.copy(train)
    unlabeled.labels = None  # the same images, labels withheld
    clustered = copy.deepcopy(teacher)
    report = qretrain.cluster_(clustered, args.plan)
    top1 = {"teacher": qretrain.evaluate(teacher, test, batch_size=512).top1,
            "clustered": qretrain.evaluate(clustered, test, batch_size=512).top1}  # fmt: skip
    print(f"teacher {top1['teacher']:.2%}, clustered {top1['clustered']:.2%} "
          f"({report.reduction:.2%} smaller before gzip)")  # fmt: skip
    record = {
        "command": " ".join(["python benchmarks/bench_retrain_fmnist.py", f"--teacher {args.teacher}",
                             f"--plan {args.plan}", f"--epochs {args.epochs}"]
                            + ([f"--train-limit {args.train_limit}"] if args.train_limit else [])
                            + ([f"--runs {' '.join(repr(r) for r in args.runs)}"] if args.runs else [])
                            + ([f"--block-epochs {args.block_epochs} --tag {args.tag}"] if args.tag else [])
                            + ([f"--block-images {args.block_images}"] if args.block_images else [])
                            + ([f"--block-batch {args.block_batch}"] if args.block_batch else [])
                            + ([f"--teacher-epochs {args.teacher_epochs}"] if args.teacher_epochs else [])),
        "teacher": args.teacher, "plan": args.plan, "epochs": args.epochs, "seed": args.seed,
        "train_images": len(train), "test_images": len(test), "top1": top1, "runs": {},
    }  # fmt: skip
    for name, options in RUNS:
        if args.runs and name not in args.runs and not options.get("labels"):
            continue
        student = copy.deepcopy(clustered)
        blocks = {"block_epochs": args.block_epochs} if "objective" in options else {}
        if "objective" in options and args.block_batch:
            blocks["batch_size"] = args.block_batch
        config = qretrain.RetrainConfig(epochs=args.epochs, seed=args.seed, **options, **blocks)
        data = train if config.labels else unlabeled
        if "objective" in options and args.block_images:
            # The first N of the same seeded permutation: N of the images above.
            data = load_dataset("fashion-mnist:train", contract, limit=args.block_images,
                                seed=args.seed)  # fmt: skip
            data.labels = None
        start = time.perf_counter()
        result = qretrain.retrain(student, None if config.labels else teacher, data, config,
                                  progress=False)  # fmt: skip
        seconds = time.perf_counter() - start
        after = qretrain.evaluate(student, test, batch_size=512).top1
        record["runs"][name] = {"top1": after, "wall_seconds": seconds, "images": len(data),
                                "record": result.record}  # fmt: skip
        epochs = sorted(e["seconds"] for e in result.record["history"]) or [0.0]
        print(
            f"{name:28s} top-1 {after:.2%}  {seconds:7.1f} s  (one-time pass "
            f"{result.record['cache_seconds']:.1f} s, median epoch {epochs[len(epochs) // 2]:.1f} s, "
            f"cached prefix: {result.record['cached_prefix']})"
        )
    conventional = record["runs"]["conventional, unclustered"]
    for name, run in record["runs"].items():
        if name == "conventional, unclustered":
            continue
        run["gap_to_conventional_points"] = 100 * (run["top1"] - conventional["top1"])
        run["time_ratio_to_conventional"] = run["wall_seconds"] / conventional["wall_seconds"]
    print(f"wrote {write_result(path, record, machine)}")
    if not args.tag:
        plot(record, args.teacher)


def plot(record: dict, teacher: str) -> None:
    runs = {name: run["record"] for name, run in record["runs"].items()}
    labels = {name: name.replace(", ", "\n") for name in runs}
    models = {"teacher": {"label": "original", "top1": record["top1"]["teacher"]},
              "clustered": {"label": "clustered", "top1": record["top1"]["clustered"]}}  # fmt: skip
    models.update(
        {name: {"label": name, "top1": run["top1"]} for name, run in record["runs"].items()}
    )
    FIGURES.mkdir(parents=True, exist_ok=True)
    for figure in (
        quality_per_epoch(runs, labels, FIGURES / f"retrain-{teacher}-epochs.png"),
        before_after(models, "top1", FIGURES / f"retrain-{teacher}-before-after.png"),
        retrain_time(runs, labels, FIGURES / f"retrain-{teacher}-time.png"),
    ):
        print(f"wrote {figure}")


if __name__ == "__main__":
    main()
