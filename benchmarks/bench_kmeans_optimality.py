"""How far qretrain's 1-D k-means lands from the exact optimum, by k.

2,500 Gaussian and 2,500 Laplacian values (seed = k), unit weights: kmeans_1d's squared
error against the exact dynamic programme's, as a relative gap. Writes
benchmarks/results/kmeans_optimality.json.

    python benchmarks/bench_kmeans_optimality.py
"""

from __future__ import annotations

import numpy as np
from _common import RESULTS, Machine, parser, write_result

from qretrain.cluster.kmeans1d import _exact_edges, _Prefix, kmeans_1d


def main() -> None:
    parser(__doc__).parse_args()  # no options: --help says what it measures
    machine = Machine()
    record = {"command": "python benchmarks/bench_kmeans_optimality.py", "values": 2500,
              "gap": {}}  # fmt: skip
    for dist in ("normal", "laplace"):
        for k in (16, 32, 64, 128, 256):
            rng = np.random.default_rng(k)
            points = np.unique(getattr(rng, dist)(size=2500))
            weights = np.ones(len(points))
            prefix = _Prefix.of(points, weights)
            optimum = prefix.cluster_stats(_exact_edges(prefix, len(points), k))[2].sum()
            gap = kmeans_1d(points, weights, k)[1] / optimum - 1
            record["gap"][f"{dist} k={k}"] = gap
            print(f"{dist:8s} k={k:3d}: {gap:+.4%} above the optimum")
    print(f"wrote {write_result(RESULTS / 'kmeans_optimality.json', record, machine)}")


if __name__ == "__main__":
    main()
