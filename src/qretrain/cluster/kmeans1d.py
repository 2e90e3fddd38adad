"""Optimal and near-optimal k-means on weighted points on a line.

Everything here is pure math on sorted float64 numpy arrays: no validation, no I/O,
no logging. Callers (``qretrain.cluster.tensor``) validate and reduce a tensor to
points first: its sorted distinct values with their counts, or the centres of a fine
histogram with their counts. Either way the cost below depends on the number of
points, not on the number of weights.

In one dimension the clusters of an optimal k-means solution are contiguous runs of
the sorted points, so a solution is fully described by its ``edges``: cluster ``j``
holds points ``edges[j]:edges[j + 1]``. Prefix sums of weight, weight*x and
weight*x^2 then give any cluster's size, mean and squared error in O(1), which makes
both the exact dynamic programme and each Lloyd iteration cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Up to these bounds a tensor gets the exact optimum; above them, Lloyd from several
# good initialisations (near-optimal, see tests). The exact programme is O(k n log n)
# and could afford more, but the bounds decide which saved files hold the exact
# optimum, so moving them changes files.
EXACT_DP_BUDGET = 1 << 25
EXACT_DP_MAX_POINTS = 2048
# Seeded k-means++ costs O(k n); it joins the candidate initialisations only below this.
KMEANSPP_BUDGET = 1 << 22
# Lloyd alone can stop far above the optimum when clusters hold few points (15-90%
# seen on 2,500 Gaussian or Laplacian points at k = 64); an exact dynamic programme
# over m runs of consecutive points gives a start within a few percent.
# m = sqrt(COARSE_DP_BUDGET / k) bounds its cost (~0.05 s). Above COARSE_DP_MAX_K too
# few runs per cluster remain for it to help.
COARSE_DP_BUDGET = 1 << 24
COARSE_DP_MAX_K = 128
LLOYD_MAX_ITER = 1000
LLOYD_TRIAL_ITER = 40


@dataclass(frozen=True)
class _Prefix:
    """Prefix sums over sorted points; index i covers points[:i]."""

    w: np.ndarray
    s: np.ndarray
    q: np.ndarray

    @classmethod
    def of(cls, points: np.ndarray, weights: np.ndarray) -> _Prefix:
        zero = np.zeros(1)
        return cls(
            np.concatenate([zero, np.cumsum(weights)]),
            np.concatenate([zero, np.cumsum(weights * points)]),
            np.concatenate([zero, np.cumsum(weights * points * points)]),
        )

    def cluster_stats(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weight, sum and squared error of each cluster ``edges[j]:edges[j+1]``."""
        return self.runs(edges[:-1], edges[1:])

    def runs(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weight, sum and squared error of each run ``points[lo:hi]`` (0 when empty)."""
        w = self.w[hi] - self.w[lo]
        s = self.s[hi] - self.s[lo]
        q = self.q[hi] - self.q[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            sse = np.where(w > 0, q - s * s / np.where(w > 0, w, 1.0), 0.0)
        return w, s, np.maximum(sse, 0.0)


def kmeans_1d(
    points: np.ndarray, weights: np.ndarray, k: int, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Cluster sorted distinct ``points`` (n,) with ``weights`` (n,) into at most k runs.

    Returns ``edges`` (K+1,) int64 with ``edges[0] == 0`` and ``edges[-1] == n``,
    K = min(k, n) non-empty clusters, and the total weighted squared error.
    Exact when ``k * n^2`` is small, otherwise Lloyd from the best of several starts
    (cube-root density, linear, a coarse exact DP for k <= 128, and a seeded
    k-means++ when n * k is small enough).
    """
    n = points.shape[0]
    prefix = _Prefix.of(points, weights)
    if k >= n:
        edges = np.arange(n + 1)
        return edges, 0.0
    if n <= EXACT_DP_MAX_POINTS and k * n * n <= EXACT_DP_BUDGET:
        edges = _exact_edges(prefix, n, k)
        return edges, float(prefix.cluster_stats(edges)[2].sum())
    inits = [_init_cube_root_density(points, weights, k), _init_linear(points, k)]
    if k <= COARSE_DP_MAX_K:
        inits.append(_init_coarse_dp(points, prefix, k))
    if k * n <= KMEANSPP_BUDGET:
        inits.append(_init_kmeanspp(points, weights, k, np.random.default_rng(seed)))
    # Every start gets a short run; only the best one runs on to convergence (Lloyd
    # from a poor start can take thousands of iterations to get nowhere).
    trials = []
    for init in inits:
        edges = _lloyd(points, prefix, init, k, LLOYD_TRIAL_ITER)
        trials.append((float(prefix.cluster_stats(edges)[2].sum()), edges))
    _, edges = min(trials, key=lambda t: t[0])
    best_edges = _lloyd(points, prefix, np.diff(prefix.s[edges]) / np.diff(prefix.w[edges]), k)
    best_sse = float(prefix.cluster_stats(best_edges)[2].sum())
    return best_edges, best_sse


def _exact_edges(prefix: _Prefix, n: int, k: int) -> np.ndarray:
    """Exact optimum by dynamic programming over the split positions.

    ``best[h]``, the least error of splitting points[:h] into m + 1 clusters, is the
    minimum over ``lo`` of the m-cluster error of points[:lo] plus the error of
    points[lo:h]. The squared error of a run of sorted points satisfies the quadrangle
    inequality, so the leftmost best ``lo`` never decreases as ``h`` grows: divide and
    conquer (the middle ``h`` first, then each half within the bounds its ``lo`` sets)
    finds every ``h``'s leftmost best ``lo`` in O(n log n) per cluster count, not
    O(n^2), with the same edges a full search gives. Each level of the recursion is
    one vectorised step over all its segments.
    """
    best = _run_costs(prefix, np.zeros(n + 1, dtype=np.int64), np.arange(n + 1))
    choice = np.zeros((k, n + 1), dtype=np.int64)
    for m in range(1, k):
        best = _next_row(prefix, best, n, choice[m])
    edges = [n]
    for m in range(k - 1, 0, -1):
        edges.append(int(choice[m][edges[-1]]))
    edges.append(0)
    return np.array(edges[::-1], dtype=np.int64)


def _run_costs(prefix: _Prefix, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Squared error of each run points[lo:hi]; infinite where the run is empty."""
    return np.where(hi > lo, prefix.runs(lo, hi)[2], np.inf)


def _next_row(prefix: _Prefix, best: np.ndarray, n: int, choice: np.ndarray) -> np.ndarray:
    """One more cluster: ``best`` (n + 1,) for m clusters -> for m + 1, each h's leftmost
    best start of its last cluster written to ``choice`` (n + 1,)."""
    new = np.empty(n + 1)
    # Segments of h still to do, [h_lo, h_hi], and the bounds [o_lo, o_hi] of their lo.
    h_lo, h_hi = np.array([0]), np.array([n])
    o_lo, o_hi = np.array([0]), np.array([n])
    while len(h_lo):
        mid = (h_lo + h_hi) // 2
        counts = np.maximum(np.minimum(o_hi, mid - 1), o_lo) - o_lo + 1  # >= 1 each
        offsets = np.cumsum(counts) - counts
        flat = np.arange(counts.sum())
        lo = np.repeat(o_lo - offsets, counts) + flat
        total = best[lo] + _run_costs(prefix, lo, np.repeat(mid, counts))
        low = np.minimum.reduceat(total, offsets)
        first = np.minimum.reduceat(np.where(total == np.repeat(low, counts), flat, flat.size),
                                    offsets)  # fmt: skip
        first = np.where(first == flat.size, offsets, first)  # no total equal its min (nan)
        opt = lo[first]
        choice[mid], new[mid] = opt, total[first]
        left, right = mid > h_lo, mid < h_hi
        h_lo, h_hi, o_lo, o_hi = (
            np.concatenate([h_lo[left], mid[right] + 1]),
            np.concatenate([mid[left] - 1, h_hi[right]]),
            np.concatenate([o_lo[left], opt[right]]),
            np.concatenate([opt[left], o_hi[right]]),
        )
    return new


def _lloyd(
    points: np.ndarray,
    prefix: _Prefix,
    centroids: np.ndarray,
    k: int,
    max_iter: int = LLOYD_MAX_ITER,
) -> np.ndarray:
    """Lloyd iterations to a fixed point, each O(k log n) thanks to the prefix sums.

    Clusters that empty out are refilled by splitting the cluster with the largest
    error, so the result has min(k, n) clusters whenever the points allow it.
    """
    n = points.shape[0]
    centroids = np.unique(centroids)
    edges = None
    for _ in range(max_iter):
        boundaries = (centroids[:-1] + centroids[1:]) / 2
        new_edges = np.concatenate([[0], np.searchsorted(points, boundaries, side="right"), [n]])
        if np.any(new_edges[1:] == new_edges[:-1]):
            new_edges = np.unique(new_edges)  # drops empty clusters
            if len(new_edges) - 1 < k and len(new_edges) - 1 < n:
                new_edges = _split_worst(prefix, new_edges, k, n)
        if edges is not None and np.array_equal(new_edges, edges):
            break
        edges = new_edges
        centroids = np.diff(prefix.s[edges]) / np.diff(prefix.w[edges])
    return edges


def _split_worst(prefix: _Prefix, edges: np.ndarray, k: int, n: int) -> np.ndarray:
    """Add split points inside the highest-error clusters until there are k clusters."""
    edges = list(edges)
    while len(edges) - 1 < min(k, n):
        arr = np.array(edges)
        _, _, sse = prefix.cluster_stats(arr)
        sizes = np.diff(arr)
        sse = np.where(sizes > 1, sse, -1.0)
        worst = int(np.argmax(sse))
        if sse[worst] < 0:
            break
        lo, hi = edges[worst], edges[worst + 1]
        edges.insert(worst + 1, (lo + hi) // 2)
    return np.array(edges, dtype=np.int64)


def _init_coarse_dp(points: np.ndarray, prefix: _Prefix, k: int) -> np.ndarray:
    """Centroids of the exact optimum over m runs of consecutive points.

    Half of the run boundaries fall at equal steps of weight (resolution where the
    data is dense), half at equal steps of value (resolution in the sparse tails,
    where optimal clusters hold few points).
    """
    m = int(min(EXACT_DP_MAX_POINTS, (COARSE_DP_BUDGET / k) ** 0.5))
    by_weight = np.searchsorted(prefix.w, prefix.w[-1] * np.arange(1, m // 2) / (m // 2))
    by_value = np.searchsorted(points, np.linspace(points[0], points[-1], m // 2 + 1)[1:-1])
    cuts = np.unique(np.concatenate([[0], by_weight, by_value, [len(points)]]))
    runs = _Prefix(prefix.w[cuts], prefix.s[cuts], prefix.q[cuts])
    edges = _exact_edges(runs, len(cuts) - 1, min(k, len(cuts) - 1))
    w, s, _ = runs.cluster_stats(edges)
    return s / w


def _init_linear(points: np.ndarray, k: int) -> np.ndarray:
    """Centroids evenly spaced over the range: covers the tails."""
    return np.linspace(points[0], points[-1], k)


def _init_cube_root_density(points: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Centroids at quantiles of density^(1/3): the asymptotically optimal spacing.

    For many levels the optimal quantiser's point density is proportional to the
    cube root of the data density (Panter-Dite), denser than linear in the bulk and
    sparser than equal-count in the tails.
    """
    bins = min(4096, max(16, 4 * k))
    hist, edges = np.histogram(points, bins=bins, weights=weights)
    mass = np.cbrt(hist)
    cdf = np.concatenate([[0.0], np.cumsum(mass)])
    cdf /= cdf[-1]
    targets = (np.arange(k) + 0.5) / k
    return np.interp(targets, cdf, edges)


def _init_kmeanspp(
    points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Weighted k-means++ seeding (D^2 sampling), deterministic for a given rng."""
    chosen = [points[rng.choice(len(points), p=weights / weights.sum())]]
    dist = (points - chosen[0]) ** 2
    for _ in range(1, k):
        score = dist * weights
        total = score.sum()
        if total <= 0:
            break
        c = points[rng.choice(len(points), p=score / total)]
        chosen.append(c)
        np.minimum(dist, (points - c) ** 2, out=dist)
    return np.sort(np.array(chosen))
