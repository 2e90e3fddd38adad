"""Block-wise retraining settings for the fast Fashion-MNIST run, chosen on held-out
training images (never on fashion-mnist:test).

A reference teacher (``--teacher vgg|resnet``) clustered with a plan; block-wise retraining
(``--tune-centroids``) on the first N of the 20,000 training images that
bench_retrain_fmnist.py uses (the same seeded permutation), for each N, passes per
block and batch size of the grid; each scored by top-1 on 10,000 *other* training
images (offset 20,000 in that permutation: a validation split). The fast row of
docs/BENCHMARKS.md takes the best validation top-1 whose wall time fits 1/20 of
conventional retraining's; bench_retrain_fmnist.py then measures it on the test set.

    python benchmarks/bench_blocks_fmnist_grid.py --plan examples/plans/vgg-small-fmnist.yaml
    # -> benchmarks/results/blocks_grid_vgg.json (--teacher resnet: blocks_grid_resnet.json)
"""

from __future__ import annotations

import copy
import itertools
import time

from _common import RESULTS, Machine, parser, reference_teacher, write_result

import qretrain
from qretrain.data import load_dataset
from qretrain.models import get_arch


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--teacher", choices=["vgg", "resnet"], default="vgg")
    cli.add_argument("--plan", required=True)
    cli.add_argument("--images", type=int, nargs="+", default=[20000, 10000, 5000])
    cli.add_argument("--passes", type=int, nargs="+", default=[1, 2])
    cli.add_argument("--batch", type=int, nargs="+", default=[64, 128])
    cli.add_argument("--seed", type=int, default=0)
    args = cli.parse_args()
    machine = Machine()

    teacher = reference_teacher(args.teacher)
    contract = get_arch(teacher).contract
    val = load_dataset("fashion-mnist:train", contract, limit=10000, offset=20000, seed=args.seed)
    clustered = copy.deepcopy(teacher)
    qretrain.cluster_(clustered, args.plan, progress=False)
    record = {
        "command": f"python benchmarks/bench_blocks_fmnist_grid.py --teacher {args.teacher} "
                   f"--plan {args.plan}",
        "seed": args.seed, "validation": "fashion-mnist:train, 10,000 images at offset 20,000",
        "teacher_val_top1": qretrain.evaluate(teacher, val, batch_size=512).top1,
        "clustered_val_top1": qretrain.evaluate(clustered, val, batch_size=512).top1, "rows": [],
    }  # fmt: skip
    subsets = {n: load_dataset("fashion-mnist:train", contract, limit=n, seed=args.seed)
               for n in args.images}  # fmt: skip
    for images, passes, batch in itertools.product(args.images, args.passes, args.batch):
        data = subsets[images]
        data.labels = None
        student = copy.deepcopy(clustered)
        config = qretrain.RetrainConfig(objective="blocks", tune_centroids=True, seed=args.seed,
                                        block_epochs=passes, batch_size=batch)  # fmt: skip
        start = time.perf_counter()
        qretrain.retrain(student, teacher, data, config, progress=False)
        seconds = time.perf_counter() - start
        row = {"images": images, "passes": passes, "batch": batch, "wall_seconds": seconds,
               "val_top1": qretrain.evaluate(student, val, batch_size=512).top1}  # fmt: skip
        record["rows"].append(row)
        print(
            f"{images:6d} images, {passes} pass(es), batch {batch:4d}: "
            f"validation top-1 {row['val_top1']:.2%} in {seconds:.1f} s",
            flush=True,
        )
    print(f"wrote {write_result(RESULTS / f'blocks_grid_{args.teacher}.json', record, machine)}")


if __name__ == "__main__":
    main()
