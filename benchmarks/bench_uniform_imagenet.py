"""Uniform palettization of EfficientNet-Lite0, qretrain against coremltools, on ImageNet.

    python benchmarks/bench_uniform_imagenet.py --imagenet ../shared/imagenet-sample-dev

The baseline every plan is compared with: each convolution and linear weight at
2^bits values per tensor. qretrain: k-means (``cluster_``, the plan
examples/plans/efficientnet-lite0-uniform-4bit.yaml at 4 bits); coremltools:
``PostTrainingPalettizer`` (n_bits, per_tensor, its default weight threshold of 2,048
values, so small tensors stay float). Both are stored by qretrain's packed file
(coremltools' palettized values clustered again exactly, so the file holds its
tables) and evaluated as loaded back from it on the ImageNet evaluation set (used for
nothing else): top-1, agreement, drop with a paired 95% bootstrap interval.
Results: benchmarks/results/uniform_imagenet.json.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path

import torch
from _common import RESULTS, ImageNet, Machine, float32_bytes, parser, write_result

import qretrain


def uniform_plan(bits: int) -> dict:
    return {"rules": [{"type": "Conv2d", "k": 2**bits}, {"type": "Linear", "k": 2**bits}]}


def coremltools_palettized(model: torch.nn.Module, bits: int) -> torch.nn.Module:
    from coremltools.optimize.torch.palettization import (
        PostTrainingPalettizer,
        PostTrainingPalettizerConfig,
    )

    config = PostTrainingPalettizerConfig.from_dict(
        {"global_config": {"n_bits": bits, "granularity": "per_tensor"}})  # fmt: skip
    palettized = PostTrainingPalettizer(copy.deepcopy(model), config).compress(inplace=True)
    # Its values in a plain copy (coremltools adds _COREML_ buffers), then each palettized
    # tensor clustered again at k = its distinct values (exact), so that the packed file
    # holds exactly coremltools' values.
    out = copy.deepcopy(model)
    out.load_state_dict({k: v for k, v in palettized.state_dict().items() if "_COREML_" not in k})
    rules = []
    for name, p in out.named_parameters():
        if name.endswith("weight") and p.dim() > 1 and p.unique().numel() <= 2**bits:
            rules.append({"name": name.removesuffix(".weight"), "k": 2**bits})
    before = {n: p.detach().clone() for n, p in out.named_parameters()}
    qretrain.cluster_(out, {"rules": rules}, progress=False)
    assert all(torch.equal(before[n], p) for n, p in out.named_parameters())  # exact
    return out


def main() -> None:
    cli = parser(__doc__, imagenet=True)
    cli.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    args = cli.parse_args()
    machine = Machine()
    logging.disable(logging.INFO)  # coremltools logs every layer at INFO
    model = qretrain.load_model("efficientnet-lite0").eval()
    imagenet = ImageNet(args.imagenet, model)
    float32 = float32_bytes(model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bits in args.bits:
            ours = copy.deepcopy(model)
            qretrain.cluster_(ours, uniform_plan(bits), progress=False)
            for name, clustered in (("qretrain k-means", ours),
                                    ("coremltools PostTrainingPalettizer",
                                     coremltools_palettized(model, bits))):  # fmt: skip
                saved = qretrain.save(clustered, Path(tmp) / "m.h5")
                logits = imagenet.logits(qretrain.load(saved.path))
                rows.append({"method": name, "bits": bits, "file_bytes": saved.file_bytes,
                             "times_smaller": float32 / saved.file_bytes,
                             "clustered_tensors": len(qretrain.codebooks(clustered)),
                             **imagenet.scores(logits)})  # fmt: skip
                r = rows[-1]
                drop, (low, high) = r["top1_drop_points"], r["drop_95_interval"]
                print(
                    f"{name:36s} {bits} bits {r['times_smaller']:5.2f}x "
                    f"({r['clustered_tensors']} tensors) top-1 {r['top1']:.2%} drop "
                    f"{drop:+.1f} [{low:+.1f}, {high:+.1f}] agreement {r['agreement']:.2%}"
                )
    record = {"data": imagenet.data.describe(), "float32_bytes": float32,
              "original_top1": imagenet.original_top1, "rows": rows}  # fmt: skip
    write_result(RESULTS / "uniform_imagenet.json", record, machine)


if __name__ == "__main__":
    main()
