"""Wall time of block-wise retraining alone (no conventional anchor) on a Fashion-MNIST
reference teacher: for timing one version of the block stage against another.

The teacher clustered with a plan, block-wise retraining (``--tune-centroids``) for
``--passes`` per block on ``--images`` training images; prints and records the wall
time, each block's seconds, top-1 on fashion-mnist:test and a digest of the weights
(equal digests: the versions trained the same model). To compare code versions, run
it against another checkout's package, alternating:

    git worktree add /tmp/before 9e7979c
    for v in before after before after; do
        if [ $v = before ]; then src=/tmp/before/src; else src=src; fi
        PYTHONPATH=$src python benchmarks/bench_blocks_fmnist_time.py --passes 4 --tag $v
    done   # -> benchmarks/results/blocks_time_vgg.json (one row per run)
"""

from __future__ import annotations

import copy
import hashlib
import time

from _common import RESULTS, Machine, parser, read_json, reference_teacher, write_json

import qretrain
from qretrain.data import load_dataset
from qretrain.models import get_arch


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--teacher", choices=["vgg", "resnet"], default="vgg")
    cli.add_argument("--plan", default="examples/plans/vgg-small-fmnist.yaml")
    cli.add_argument("--images", type=int, default=20000)
    cli.add_argument("--passes", type=int, default=1)
    cli.add_argument("--batch", type=int, default=128)
    cli.add_argument("--tag", required=True, help="what this run times (a code version)")
    args = cli.parse_args()
    machine = Machine()

    teacher = reference_teacher(args.teacher)
    contract = get_arch(teacher).contract
    data = load_dataset("fashion-mnist:train", contract, limit=args.images, seed=0)
    data.labels = None
    test = load_dataset("fashion-mnist:test", contract)
    student = copy.deepcopy(teacher)
    qretrain.cluster_(student, args.plan, progress=False)
    config = qretrain.RetrainConfig(objective="blocks", tune_centroids=True,
                                    block_epochs=args.passes, batch_size=args.batch)  # fmt: skip
    start = time.perf_counter()
    result = qretrain.retrain(student, teacher, data, config, progress=False)
    seconds = time.perf_counter() - start
    digest = hashlib.sha256()
    for value in student.state_dict().values():
        digest.update(value.detach().cpu().numpy().tobytes())
    row = {"tag": args.tag, "qretrain": qretrain.__file__, "teacher": args.teacher,
           "plan": args.plan, "images": args.images, "passes": args.passes, "batch": args.batch,
           "wall_seconds": seconds, "top1": qretrain.evaluate(student, test, batch_size=512).top1,
           "weights_sha256": digest.hexdigest(),
           "block_seconds": [h["seconds"] for h in result.record["blocks"]["history"]],
           "machine": machine.at_end()}  # fmt: skip
    print(
        f"{args.tag}: {seconds:.1f} s, top-1 {row['top1']:.2%}, weights {row['weights_sha256'][:12]}"
    )
    path = RESULTS / f"blocks_time_{args.teacher}.json"
    print(f"wrote {write_json(path, [*read_json(path, []), row])}")


if __name__ == "__main__":
    main()
