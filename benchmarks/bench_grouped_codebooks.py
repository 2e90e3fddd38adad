"""Grouped-channel codebooks before building them: what one codebook per group of output
channels would buy on the Lite0 8x plan as deployed, against spending the bytes on k.

For the largest layers of the 8x case's plan (benchmarks/results/case_effnet_8x), each
layer alone is clustered (k-means, the rest of the model float32) four ways and
measured by the mean KL to the original on unlabeled pool images (the recipe's pool,
256 images drawn by seed 0; no ImageNet image):

    tensor     one codebook of the plan's k (what the plan stores)
    group 8    one codebook of k values per 8 output channels (coremltools'
               per_grouped_channel), where the channels divide by 8
    channel    one codebook of k values per output channel
    tensor 2k  one codebook of twice the plan's k: one more bit per weight

Bytes are the packed indices plus the codebooks at float32 (a Core ML table stores
its values at the weights' precision). Then the whole plan once per tensor and once
with every layer but the depthwise ones (one input channel each) grouped by 8 (where the
channels divide), measured the same way. Writes benchmarks/results/grouped_codebooks.json.

    python benchmarks/bench_grouped_codebooks.py
"""

from __future__ import annotations

import math

import _common

PLAN = _common.RESULTS / "case_effnet_8x" / "plan.yaml"
LAYERS = 4  # the largest clustered layers measured alone


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--images", type=int, default=256)
    args = cli.parse_args()
    machine = _common.Machine()

    import torch

    from qretrain.cluster.tensor import cluster_tensor

    probe = _common.LayersAlone(PLAN, args.images)
    original, ks, kl_of = probe.original, probe.ks, probe.kl_of

    def clustered(weight: torch.Tensor, k: int, group: int | None) -> tuple[torch.Tensor, int]:
        """(decoded weight, bytes); group None: one codebook for the tensor."""
        rows = 1 if group is None else weight.shape[0] // group
        c = cluster_tensor(
            weight.reshape(rows, -1), k, granularity="tensor" if rows == 1 else "channel"
        )
        bits = math.ceil(math.log2(k))
        return c.decode().reshape(weight.shape), math.ceil(weight.numel() * bits / 8) + rows * k * 4

    largest = sorted(ks, key=lambda n: -original[n].numel())[:LAYERS]
    layers = {}
    for name in largest:
        weight, k = original[name], ks[name]
        ways = {"tensor": (k, None), "channel": (k, 1), "tensor 2k": (2 * k, None)}
        if weight.shape[0] % 8 == 0:
            ways["group 8"] = (k, 8)
        layers[name] = {}
        for way, (kk, group) in ways.items():
            decoded, size = clustered(weight, kk, group)
            layers[name][way] = {"k": kk, "bytes": size, "kl": kl_of({name: decoded})}
            print(
                f"{name} {way} (k={kk}): KL {layers[name][way]['kl']:.4f}, {size:,} B", flush=True
            )
    whole = {}
    for way in ("tensor", "group 8"):
        replaced, size = {}, 0
        for name, k in ks.items():
            weight = original[name]
            group = 8 if way == "group 8" and weight.shape[1] > 1 and weight.shape[0] % 8 == 0 \
                else None  # fmt: skip
            replaced[name], b = clustered(weight, k, group)
            size += b
        whole[way] = {"bytes": size, "kl": kl_of(replaced)}
        print(f"whole plan, {way}: KL {whole[way]['kl']:.4f}, {size:,} B", flush=True)
    _common.write_result(_common.RESULTS / "grouped_codebooks.json",
                         {"plan": "case_effnet_8x/plan.yaml", "images": len(probe.data),
                          "layers": layers, "whole_plan": whole}, machine)  # fmt: skip


if __name__ == "__main__":
    main()
