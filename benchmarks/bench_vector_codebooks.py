"""Vector palettization before building it: what codebooks of 2-vectors (coremltools'
``cluster_dim``) would buy on the Lite0 8x plan as deployed, at the same bits per weight.

A codebook of K 2-vectors stores each pair of weights as one index of log2(K) bits:
K = k^2 spends the bits of a scalar codebook of k values (k = 8: 64 pairs at 6 bits a
pair), but lets the pairs' values depend on each other. Core ML stores such tables
(K up to 256, so for plan cells of k <= 16) with the pairs along the output channels.

For the largest layers of today's 8x plan (benchmarks/results/case_effnet_8x_last_layer),
each layer alone is clustered (the rest of the model float32) and measured by the mean
KL to the original on unlabeled pool images (the recipe's pool, 256 images drawn by
seed 0; no ImageNet image):

    scalar k       one codebook of the plan's k values (what the plan stores; the exact
                   1-D k-means of qretrain.cluster)
    scalar 2k      one more bit per weight, for scale
    pairs out k^2  2-vectors of neighbouring output channels (w[2i], w[2i+1] at one
                   position; Core ML's axis), K = k^2
    pairs row k^2  2-vectors of neighbouring weights within an output channel's row
                   (neighbouring input channels of a 1x1 convolution), K = k^2

The pairs are clustered by Lloyd's k-means from a k-means++ start (seeded, at most
``ITERATIONS`` rounds): not the exact optimum that the scalar codebooks get, so what
vectors buy here is if anything understated. Bytes are the packed indices plus the
codebooks at float32 (a Core ML table stores its values at the weights' precision).

Then the whole plan: once as planned, and once with every cell of k <= 16 whose
output channels pair up stored as pairs of each axis, measured the same way.

Decision rule, written before the first run: building vector codebooks (format,
sweep, planner, retraining, both exports) is worth it if the whole plan's KL with
pairs along the output channels (the axis Core ML stores) is at least 20% lower than
as planned, for at most 5% more bytes. Writes benchmarks/results/vector_codebooks.json.

    python benchmarks/bench_vector_codebooks.py
"""

from __future__ import annotations

import math

import _common

PLAN = _common.RESULTS / "case_effnet_8x_last_layer" / "plan.yaml"
LAYERS = 4  # the largest clustered layers measured alone
ITERATIONS = 30  # Lloyd rounds at most for a vector codebook
SAMPLE = 20_000  # points the k-means++ start draws from
CHUNK = 1 << 16  # points whose distances to every centroid are computed at once


def pair_kmeans(points, count: int, seed: int):
    """Lloyd's k-means of ``points`` (n, d) into ``count`` centroids from a k-means++
    start: the centroids (count, d) and each point's index (n,)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(points), generator=generator)[:SAMPLE]
    sample = points[pick]
    centroids = sample[torch.randint(len(sample), (1,), generator=generator)]
    nearest = (sample - centroids[0]).square().sum(1)
    for _ in range(1, count):
        chosen = torch.multinomial(nearest + 1e-30, 1, generator=generator)
        centroids = torch.cat([centroids, sample[chosen]])
        nearest = torch.minimum(nearest, (sample - sample[chosen]).square().sum(1))
    index = torch.empty(len(points), dtype=torch.long)
    for _ in range(ITERATIONS):
        for at in range(0, len(points), CHUNK):
            index[at : at + CHUNK] = torch.cdist(points[at : at + CHUNK], centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, index, points)
        counts = torch.bincount(index, minlength=count).unsqueeze(1)
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(moved, centroids):
            break
        centroids = moved
    return centroids, index


def pairs_of(weight, axis: str):
    """``weight`` (O, ...) as (n, 2) pairs along ``axis`` ("out": neighbouring output
    channels at one position; "row": neighbouring weights of one channel's row), and
    the inverse that puts (n, 2) values back in ``weight``'s shape; None when the
    axis's length is odd."""
    rows = weight.reshape(len(weight), -1)
    if axis == "out":
        if len(weight) % 2:
            return None
        pairs = rows.reshape(len(weight) // 2, 2, -1).transpose(1, 2).reshape(-1, 2)
        return (
            pairs,
            lambda v: v.reshape(len(weight) // 2, -1, 2).transpose(1, 2).reshape(weight.shape),
        )
    if rows.shape[1] % 2:
        return None
    return rows.reshape(-1, 2), lambda v: v.reshape(weight.shape)


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--images", type=int, default=256)
    args = cli.parse_args()
    machine = _common.Machine()

    import torch

    from qretrain.cluster.tensor import cluster_tensor

    probe = _common.LayersAlone(PLAN, args.images)
    original, ks, kl_of = probe.original, probe.ks, probe.kl_of

    def scalar(weight: torch.Tensor, k: int) -> tuple[torch.Tensor, int]:
        """(decoded weight, bytes) of one codebook of k values."""
        decoded = cluster_tensor(weight, k, granularity="tensor").decode()
        return decoded.reshape(weight.shape), math.ceil(weight.numel() * math.log2(k) / 8) + 4 * k

    def paired(weight: torch.Tensor, k: int, axis: str) -> tuple[torch.Tensor, int] | None:
        """(decoded weight, bytes) of k^2 pairs along ``axis``; None where they do not fit."""
        split = pairs_of(weight, axis)
        if split is None or k * k > 256:
            return None
        points, back = split
        centroids, index = pair_kmeans(points.float(), k * k, seed=0)
        size = math.ceil(len(points) * math.log2(k * k) / 8) + 4 * 2 * k * k
        return back(centroids[index]).to(weight.dtype), size

    largest = sorted(ks, key=lambda n: -original[n].numel())[:LAYERS]
    layers = {}
    for name in largest:
        weight, k = original[name], ks[name]
        ways = {
            "scalar k": scalar(weight, k),
            "scalar 2k": scalar(weight, 2 * k),
            "pairs out k^2": paired(weight, k, "out"),
            "pairs row k^2": paired(weight, k, "row"),
        }
        layers[name] = {}
        for way, result in ways.items():
            if result is None:
                continue
            decoded, size = result
            layers[name][way] = {"bytes": size, "kl": kl_of({name: decoded})}
            print(f"{name} {way} (k={k}): KL {layers[name][way]['kl']:.4f}, {size:,} B", flush=True)
    whole = {}
    for way in ("scalar k", "pairs out k^2", "pairs row k^2"):
        replaced, size, paired_cells = {}, 0, 0
        for name, k in ks.items():
            weight = original[name]
            result = None if way == "scalar k" else paired(weight, k, way.split()[1])
            if result is None:
                result = scalar(weight, k)
            else:
                paired_cells += 1
            replaced[name], b = result
            size += b
        whole[way] = {"bytes": size, "kl": kl_of(replaced), "paired_cells": paired_cells}
        print(f"whole plan, {way}: KL {whole[way]['kl']:.4f}, {size:,} B, "
              f"{paired_cells} cells as pairs", flush=True)  # fmt: skip
    anchor, pairs = whole["scalar k"], whole["pairs out k^2"]
    kl_ratio, bytes_ratio = pairs["kl"] / anchor["kl"], pairs["bytes"] / anchor["bytes"]
    worth = kl_ratio <= 0.80 and bytes_ratio <= 1.05
    print(f"rule: KL ratio {kl_ratio:.3f} (at most 0.80), bytes ratio {bytes_ratio:.3f} "
          f"(at most 1.05): {'worth building' if worth else 'not worth building'}")  # fmt: skip
    _common.write_result(_common.RESULTS / "vector_codebooks.json",
                         {"plan": "case_effnet_8x_last_layer/plan.yaml", "images": len(probe.data),
                          "layers": layers, "whole_plan": whole,
                          "rule": {"kl_ratio": kl_ratio, "bytes_ratio": bytes_ratio,
                                   "worth_building": worth}}, machine)  # fmt: skip


if __name__ == "__main__":
    main()
