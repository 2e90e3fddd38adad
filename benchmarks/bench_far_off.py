"""Label-free retraining on far-off data, with and without the validation guard.

The clustered VGG teacher (examples/plans/vgg-small-fmnist.yaml) retrained
label-free on MNIST digits (`mnist`, 5,000 images: a different dataset from the
Fashion-MNIST the teacher learned), once unguarded and once with --val-data: 200
unlabeled fashion-mnist:train images, scored by agreement with the teacher. Top-1 on
the full fashion-mnist:test. Writes benchmarks/results/far_off_<trainable>.json.

    python benchmarks/bench_far_off.py --trainable unclustered --epochs 5
"""

from __future__ import annotations

import copy
import time

from _common import PLANS, RESULTS, Machine, parser, reference_teacher, write_result

import qretrain
from qretrain.models import get_arch

PLAN = PLANS / "vgg-small-fmnist.yaml"


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--trainable", default="unclustered")
    cli.add_argument("--epochs", type=int, default=5)
    cli.add_argument("--seed", type=int, default=0)
    args = cli.parse_args()
    machine = Machine()
    teacher = reference_teacher("vgg")
    contract = get_arch(teacher).contract
    test = qretrain.load_dataset("fashion-mnist:test", contract)
    digits = qretrain.load_dataset("mnist", contract)
    digits.labels = None
    val = qretrain.load_dataset("fashion-mnist:train", contract, limit=200, seed=args.seed + 1)
    val.labels = None  # the guard needs no labels: agreement with the teacher
    clustered = copy.deepcopy(teacher)
    qretrain.cluster_(clustered, PLAN)
    record = {
        "command": f"python benchmarks/bench_far_off.py --trainable {args.trainable} "
        f"--epochs {args.epochs}",
        "top1": {"teacher": qretrain.evaluate(teacher, test, batch_size=512).top1,
                 "clustered": qretrain.evaluate(clustered, test, batch_size=512).top1},
        "runs": {},
    }  # fmt: skip
    print(f"teacher {record['top1']['teacher']:.2%}, clustered {record['top1']['clustered']:.2%}")
    for name, val_data in (("unguarded", None), ("guarded", val)):
        student = copy.deepcopy(clustered)
        config = qretrain.RetrainConfig(
            epochs=args.epochs, trainable=args.trainable, seed=args.seed
        )
        start = time.perf_counter()
        result = qretrain.retrain(student, teacher, digits, config, val_data=val_data,
                                  progress=False)  # fmt: skip
        top1 = qretrain.evaluate(student, test, batch_size=512).top1
        record["runs"][name] = {"top1": top1, "seconds": time.perf_counter() - start,
                                "record": result.record}  # fmt: skip
        guard = result.record.get("guard", "")
        print(f"{name:10s} top-1 {top1:.2%}  {guard}")
    print(f"wrote {write_result(RESULTS / f'far_off_{args.trainable}.json', record, machine)}")


if __name__ == "__main__":
    main()
