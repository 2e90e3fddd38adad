"""Which loss between output vectors recovers more: KL at temperature T, or MSE on logits.

Both teachers, clustered with their example plans, retrained label-free with
--trainable last for the same epochs on the same 60,000 fashion-mnist:train images
(labels withheld); top-1 on the full fashion-mnist:test. Writes
benchmarks/results/loss.json.

    python benchmarks/bench_loss.py --epochs 5
"""

from __future__ import annotations

import copy

from _common import PLANS, RESULTS, Machine, parser, reference_teacher, write_result

import qretrain
from qretrain.models import get_arch

PLAN_FILES = {"vgg": PLANS / "vgg-small-fmnist.yaml", "resnet": PLANS / "resnet-small-fmnist.yaml"}
LOSSES = [("kl", 1.0), ("kl", 2.0), ("kl", 4.0), ("mse", 1.0)]


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--epochs", type=int, default=5)
    args = cli.parse_args()
    machine = Machine()
    record = {"command": f"python benchmarks/bench_loss.py --epochs {args.epochs}", "runs": {}}
    for name, plan in PLAN_FILES.items():
        teacher = reference_teacher(name)
        contract = get_arch(teacher).contract
        test = qretrain.load_dataset("fashion-mnist:test", contract)
        train = qretrain.load_dataset("fashion-mnist:train", contract)
        train.labels = None
        clustered = copy.deepcopy(teacher)
        qretrain.cluster_(clustered, plan)
        for loss, temperature in LOSSES:
            student = copy.deepcopy(clustered)
            config = qretrain.RetrainConfig(epochs=args.epochs, trainable="last", loss=loss,
                                            temperature=temperature)  # fmt: skip
            qretrain.retrain(student, teacher, train, config, progress=False)
            top1 = qretrain.evaluate(student, test, batch_size=512).top1
            key = f"{name} {loss}" + (f" T={temperature:g}" if loss == "kl" else "")
            record["runs"][key] = top1
            print(f"{key:16s} top-1 {top1:.2%}")
    print(f"wrote {write_result(RESULTS / 'loss.json', record, machine)}")


if __name__ == "__main__":
    main()
