"""Forward-pass speed of the Fashion-MNIST teachers, default layout vs channels-last.

Why retraining holds convolutional models channels-last (src/qretrain/retrain/layout.py):
the one-time pass that caches the teacher's outputs and the frozen prefix is made of
such forward passes. Interleaved, median of 3, no_grad, batch 256.
Writes benchmarks/results/channels_last.json.

    python benchmarks/bench_channels_last.py --images 20000
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from _common import RESULTS, Machine, parser, reference_teacher, write_result

from qretrain.data import load_dataset
from qretrain.models import get_arch


def seconds(model: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            model(images[i : i + batch])
    return time.perf_counter() - start


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--images", type=int, default=20000)
    cli.add_argument("--repeats", type=int, default=3)
    args = cli.parse_args()
    machine = Machine()
    record = {"command": f"python benchmarks/bench_channels_last.py --images {args.images}",
              "images": args.images, "teachers": {}}  # fmt: skip
    for name in ("vgg", "resnet"):
        model = reference_teacher(name).eval()
        data = load_dataset("fashion-mnist:train", get_arch(model).contract, limit=args.images)
        images = torch.stack([data[i][0] for i in range(len(data))])
        nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
        runs = {"default": [], "channels_last": []}
        for _ in range(args.repeats):
            runs["default"].append(seconds(model, images))
            runs["channels_last"].append(seconds(nhwc, images))
        medians = {k: statistics.median(v) for k, v in runs.items()}
        speedup = medians["default"] / medians["channels_last"]
        record["teachers"][name] = {"runs": runs, "median": medians, "speedup": speedup}
        print(f"{name}: default {medians['default']:.2f} s, channels-last "
              f"{medians['channels_last']:.2f} s, {speedup:.2f}x")  # fmt: skip
    write_result(RESULTS / "channels_last.json", record, machine)


if __name__ == "__main__":
    main()
