import numpy as np
import pytest

from qretrain.cluster import kmeans1d
from qretrain.cluster.kmeans1d import kmeans_1d


def reference_optimum(points: np.ndarray, weights: np.ndarray, k: int) -> float:
    """Textbook O(k n^2) dynamic programme with explicit loops (independent code)."""
    n = len(points)

    def cost(i, j):  # cluster points[i:j]
        w, x = weights[i:j], points[i:j]
        mean = (w * x).sum() / w.sum()
        return float((w * (x - mean) ** 2).sum())

    best = [cost(0, j) if j else np.inf for j in range(n + 1)]
    for _ in range(1, k):
        best = [
            min((best[i] + cost(i, j) for i in range(1, j)), default=np.inf) for j in range(n + 1)
        ]
    return best[n]


def sse_of(points, weights, edges):
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        x, w = points[lo:hi], weights[lo:hi]
        total += float((w * (x - (w * x).sum() / w.sum()) ** 2).sum())
    return total


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_exact_dp_matches_reference(k):
    rng = np.random.default_rng(k)
    points = np.sort(rng.normal(size=30))
    weights = rng.integers(1, 5, size=30).astype(float)
    edges, sse = kmeans_1d(points, weights, k)
    assert len(edges) == k + 1 and edges[0] == 0 and edges[-1] == 30
    assert sse == pytest.approx(sse_of(points, weights, edges))
    assert sse == pytest.approx(reference_optimum(points, weights, k), rel=1e-9)


def full_search_edges(points: np.ndarray, weights: np.ndarray, k: int) -> list[int]:
    """The O(k n^2) programme searching every split, ties to the leftmost (independent
    code): the edges the divide-and-conquer programme must give exactly."""
    n = len(points)
    w, s, q = (np.concatenate([[0.0], np.cumsum(v)])
               for v in (weights, weights * points, weights * points**2))  # fmt: skip

    def cost(i, j):
        return max(q[j] - q[i] - (s[j] - s[i]) ** 2 / (w[j] - w[i]), 0.0) if j > i else np.inf

    best = [cost(0, j) for j in range(n + 1)]
    choice = [[0] * (n + 1) for _ in range(k)]
    for m in range(1, k):
        row = []
        for j in range(n + 1):
            totals = [best[i] + cost(i, j) for i in range(n + 1)]
            choice[m][j] = int(np.argmin(totals))
            row.append(totals[choice[m][j]])
        best = row
    edges = [n]
    for m in range(k - 1, 0, -1):
        edges.append(choice[m][edges[-1]])
    return [0] + edges[::-1]


@pytest.mark.parametrize("case", range(24))
def test_exact_dp_gives_the_full_searchs_edges(case):
    # Integer and rounded values make equal costs (ties) likely: the leftmost must win.
    rng = np.random.default_rng(case)
    raw = [rng.normal(size=60), rng.integers(0, 12, 60).astype(float),
           np.round(rng.laplace(size=60), 1)][case % 3]  # fmt: skip
    points = np.unique(raw)
    weights = rng.integers(1, 4, len(points)).astype(float) if case % 2 else np.ones(len(points))
    k = int(rng.integers(2, len(points)))
    prefix = kmeans1d._Prefix.of(points, weights)
    edges = kmeans1d._exact_edges(prefix, len(points), k)
    assert edges.tolist() == full_search_edges(points, weights, k)


def test_k_at_least_points_gives_one_cluster_per_point():
    points = np.array([-1.0, 0.0, 2.5])
    edges, sse = kmeans_1d(points, np.ones(3), 8)
    assert edges.tolist() == [0, 1, 2, 3] and sse == 0.0


def test_lloyd_is_deterministic_for_a_seed(monkeypatch):
    monkeypatch.setattr(kmeans1d, "EXACT_DP_MAX_POINTS", 0)
    points = np.unique(np.random.default_rng(0).standard_t(3, size=3000))
    weights = np.ones(len(points))
    a = kmeans_1d(points, weights, 32, seed=7)
    b = kmeans_1d(points, weights, 32, seed=7)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    # The other half: the seed is used. Its k-means++ start is one of several, and the
    # best start wins, so some seeds give the same result; not all of them do.
    others = [kmeans_1d(points, weights, 32, seed=s) for s in range(8, 16)]
    assert any(not np.array_equal(a[0], o[0]) for o in others)


def test_kmeanspp_start_follows_its_rng():
    points = np.linspace(-3, 3, 500)
    weights = np.ones(500)
    start = [
        kmeans1d._init_kmeanspp(points, weights, 8, np.random.default_rng(s)) for s in (1, 1, 2)
    ]
    assert np.array_equal(start[0], start[1]) and not np.array_equal(start[0], start[2])


@pytest.mark.parametrize("dist", ["normal", "laplace"])
@pytest.mark.parametrize("k", [2, 4, 8, 16])
def test_large_inputs_within_0_1_percent_of_exact(dist, k):
    """Above the exact-DP size the result stays within 0.1% of the optimum."""
    rng = np.random.default_rng(k)
    points = np.unique(getattr(rng, dist)(size=2600))
    weights = rng.integers(1, 4, size=len(points)).astype(float)
    assert len(points) > kmeans1d.EXACT_DP_MAX_POINTS  # the near-optimal path runs
    edges, sse = kmeans_1d(points, weights, k)
    prefix = kmeans1d._Prefix.of(points, weights)
    exact_edges = kmeans1d._exact_edges(prefix, len(points), k)
    exact = sse_of(points, weights, exact_edges)
    assert exact <= sse * (1 + 1e-12) and sse <= exact * 1.001
