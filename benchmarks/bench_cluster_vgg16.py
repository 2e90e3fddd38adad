"""Clustering speed and error: qretrain vs coremltools' PostTrainingPalettizer.

Clusters every conv and linear weight of torchvision VGG-16 (default init,
torch.manual_seed(0)) at k = 256 per tensor with both tools in the same run, and
times one clustering call on VGG-16's largest layer (fc6, 102.8M weights) as k runs
1, 2, 4, ..., 256. Medians over --repeats runs; results go to
benchmarks/results/cluster_vgg16.json.

    python benchmarks/bench_cluster_vgg16.py [--repeats 3]
"""

from __future__ import annotations

import copy
import logging
import statistics
import time

import torch
import torchvision
from _common import RESULTS, Machine, parser, write_result

import qretrain
from qretrain.cluster import cluster_tensor

OUT = RESULTS / "cluster_vgg16.json"
PLAN = {"rules": [{"type": "Conv2d", "k": 256}, {"type": "Linear", "k": 256}]}


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}


def squared_error(model: torch.nn.Module, original: dict[str, torch.Tensor]) -> float:
    state = model.state_dict()
    return sum(
        ((state[n].float() - w) ** 2).sum(dtype=torch.float64).item() for n, w in original.items()
    )


def run_qretrain(model: torch.nn.Module) -> tuple[float, torch.nn.Module]:
    model = copy.deepcopy(model)
    start = time.perf_counter()
    qretrain.cluster_(model, PLAN)
    return time.perf_counter() - start, model


def run_coremltools(model: torch.nn.Module) -> tuple[float, torch.nn.Module]:
    from coremltools.optimize.torch.palettization import (
        PostTrainingPalettizer,
        PostTrainingPalettizerConfig,
    )

    config = PostTrainingPalettizerConfig.from_dict(
        {"global_config": {"n_bits": 8, "granularity": "per_tensor"}}
    )
    model = copy.deepcopy(model)
    start = time.perf_counter()
    out = PostTrainingPalettizer(model, config).compress(inplace=True)
    return time.perf_counter() - start, out


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--repeats", type=int, default=3)
    args = cli.parse_args()
    machine = Machine()
    logging.disable(logging.INFO)  # coremltools logs every layer at INFO
    torch.manual_seed(0)
    model = torchvision.models.vgg16()
    original = weights(model)
    record: dict = {
        "command": "python benchmarks/bench_cluster_vgg16.py",
        "repeats": args.repeats,
    }
    ours, theirs = [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both
        t, clustered = run_qretrain(model)
        ours.append(t)
        t, palettized = run_coremltools(model)
        theirs.append(t)
    record["qretrain_s"] = ours
    record["coremltools_s"] = theirs
    record["time_ratio"] = statistics.median(ours) / statistics.median(theirs)
    record["qretrain_sq_error"] = squared_error(clustered, original)
    record["coremltools_sq_error"] = squared_error(palettized, original)
    record["error_ratio"] = record["qretrain_sq_error"] / record["coremltools_sq_error"]
    print(
        f"VGG-16, all conv/linear weights at k=256 per tensor: qretrain "
        f"{statistics.median(ours):.2f} s, coremltools {statistics.median(theirs):.2f} s "
        f"(ratio {record['time_ratio']:.3f}); squared error ratio {record['error_ratio']:.4f}"
    )
    fc6 = original["classifier.0.weight"]
    per_k = {}
    for k in [2**i for i in range(9)]:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            cluster_tensor(fc6, k)
            times.append(time.perf_counter() - start)
        per_k[k] = statistics.median(times)
        print(f"fc6 ({fc6.numel():,} weights) k={k:3d}: {per_k[k]:.3f} s")
    record["fc6_seconds_by_k"] = per_k
    print(f"wrote {write_result(OUT, record, machine)}")


if __name__ == "__main__":
    main()
