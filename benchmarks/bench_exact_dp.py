"""The exact 1-D k-means programme: divide and conquer against the full search, side by side.

One codebook per output channel runs the exact programme once per channel, so its
cost decides what a sweep of channel cells takes. For rows of real weights
(EfficientNet-Lite0's layers, each output channel's distinct values with their
counts, as ``cluster.tensor`` reduces them) and each k, both programmes run on the
same rows in one process: ``kmeans1d._exact_edges`` (divide and conquer over the
split positions) and the full O(k n^2) search it replaced, written out here. The
edges must be identical; the record gives the medians of the times and their ratio.

    python benchmarks/bench_exact_dp.py [--rows 64] [--repeats 3]

Writes benchmarks/results/exact_dp.json.
"""

from __future__ import annotations

import statistics
import time

import _common

LAYERS = ("_blocks.12._project_conv.weight", "_conv_head.weight", "_blocks.4._expand_conv.weight")
KS = (2, 4, 8, 16)


def full_search(prefix, n: int, k: int):
    """The programme searching every split for every run end (ties to the leftmost)."""
    import numpy as np

    i = np.arange(n + 1)
    w = prefix.w[None, : n + 1] - prefix.w[: n + 1, None]
    s = prefix.s[None, : n + 1] - prefix.s[: n + 1, None]
    q = prefix.q[None, : n + 1] - prefix.q[: n + 1, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        cost = np.where(i[None, :] > i[:, None], np.maximum(q - s * s / w, 0.0), np.inf)
    best = cost[0].copy()
    choice = np.zeros((k, n + 1), dtype=np.int64)
    for m in range(1, k):
        total = best[:, None] + cost
        choice[m] = np.argmin(total, axis=0)
        best = total[choice[m], i]
    edges = [n]
    for m in range(k - 1, 0, -1):
        edges.append(int(choice[m][edges[-1]]))
    edges.append(0)
    return np.array(edges[::-1], dtype=np.int64)


def main() -> None:
    cli = _common.parser(__doc__)
    cli.add_argument("--rows", type=int, default=64, help="output channels per layer")
    cli.add_argument("--repeats", type=int, default=3)
    args = cli.parse_args()
    machine = _common.Machine()

    import numpy as np

    import qretrain
    from qretrain.cluster.kmeans1d import _exact_edges, _Prefix
    from qretrain.cluster.tensor import _reduce

    weights = qretrain.load_model("efficientnet-lite0").state_dict()
    rows = []
    for name in LAYERS:
        matrix = weights[name].reshape(weights[name].shape[0], -1)
        for row in matrix[: args.rows]:
            reduced = _reduce(row.contiguous())
            points = reduced.points.numpy()
            rows.append((name, len(points), _Prefix.of(points, reduced.weights.numpy())))
    record = {"layers": list(LAYERS), "rows_per_layer": args.rows, "by_k": {}}
    for k in KS:
        times = {"divide_and_conquer": [], "full_search": []}
        identical = True
        for _ in range(args.repeats):
            for way, run in (("divide_and_conquer", _exact_edges), ("full_search", full_search)):
                start = time.perf_counter()
                edges = [run(prefix, n, k) for _, n, prefix in rows]
                times[way].append(time.perf_counter() - start)
                if way == "divide_and_conquer":
                    ours = edges
                else:
                    identical &= all(np.array_equal(a, b) for a, b in zip(ours, edges))
        medians = {way: statistics.median(t) for way, t in times.items()}
        record["by_k"][str(k)] = {
            "rows": len(rows),
            "seconds": medians,
            "speedup": medians["full_search"] / medians["divide_and_conquer"],
            "identical_edges": identical,
        }
        print(f"k={k}: {len(rows)} rows, divide and conquer {medians['divide_and_conquer']:.2f} s, "
              f"full search {medians['full_search']:.2f} s "
              f"({record['by_k'][str(k)]['speedup']:.1f}x), identical edges: {identical}",
              flush=True)  # fmt: skip
    _common.write_result(_common.RESULTS / "exact_dp.json", record, machine)


if __name__ == "__main__":
    main()
