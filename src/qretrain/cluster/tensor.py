"""Cluster one float tensor into a codebook and uint8 indices.

``cluster_tensor`` and ``cluster_many`` are the public, validating entry points;
``_cluster_many``, for callers that checked their input once already (plans check
k, ``compress`` and the sweep check each tensor with ``check_values``), and the
private ``_cluster_*`` functions assume valid input: a finite, non-empty,
contiguous float32 1-D tensor (``_cluster_pairs``: (O, ...), O even) and
``1 <= k <= 256``; they return the codebook sorted ascending with only values in use,
the indices, and the squared error.

Granularity ``pairs`` clusters the 2-vectors of neighbouring output channels at each
position (``to_pairs``) by Lloyd's k-means (``_pair_kmeans``); a tensor whose output
channels do not pair up (odd, or one dimension) gets one scalar codebook instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from qretrain.cluster.kmeans1d import kmeans_1d
from qretrain.cluster.options import MAX_K, VECTOR, Granularity, Method, parse_enum
from qretrain.errors import QretrainError

# Tensors up to this size are reduced to their exact distinct values; larger ones to
# a histogram of HIST_BINS bins (boundaries then fall on bin edges, 1/65536 of the
# range apart, which costs a negligible share of the squared error).
EXACT_POINTS_MAX = 1 << 16
HIST_BINS = 1 << 16
CHUNK = 1 << 22  # elements per pass chunk: keeps temporaries in cache
PAIR_ROUNDS = 25  # Lloyd rounds at most for a codebook of pairs
PAIR_SAMPLE = 20_000  # pairs its k-means++ start draws from
PAIR_CHUNK = 1 << 13  # pairs whose distances to every centroid are computed at once


@dataclass
class ClusteredTensor:
    """A tensor stored as codebook + indices.

    codebook: (G, K) float32, G = 1 per tensor or the number of output channels;
        row g holds ``sizes[g]`` used values ascending, then repeats its last one.
        For granularity ``pairs``: (1, K, 2), K 2-vectors in no order (all in use
        when clustered; retraining may leave some unused).
    sizes: (G,) int64, values (or pairs) in use per row (<= k).
    indices: uint8, the tensor's shape, each entry < sizes[its row]. For ``pairs``
        the shape with dimension 0 halved: index [i, ...] gives weights [2i, ...] and
        [2i + 1, ...] (Core ML's vector axis 0).
    """

    codebook: torch.Tensor
    sizes: torch.Tensor
    indices: torch.Tensor
    k: int
    method: Method
    granularity: Granularity
    sq_error: float

    @property
    def shape(self) -> torch.Size:
        """The clustered tensor's shape."""
        if self.granularity is Granularity.PAIRS:
            return torch.Size((2 * self.indices.shape[0], *self.indices.shape[1:]))
        return self.indices.shape

    @property
    def vector(self) -> int:
        """Values one index gives: 2 for pairs, else 1."""
        return VECTOR[self.granularity]

    def points(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (this tensor's shape) as the points its indices address: (G, N)
        values per codebook row, or (1, N/2, 2) pairs. Inverse: ``from_points``."""
        if self.granularity is Granularity.PAIRS:
            return to_pairs(values).unsqueeze(0)
        return values.reshape(self.codebook.shape[0], -1)

    def from_points(self, points: torch.Tensor) -> torch.Tensor:
        """``points`` (as ``points`` gives them) in this tensor's shape."""
        if self.granularity is Granularity.PAIRS:
            return from_pairs(points.reshape(-1, 2), self.shape)
        return points.reshape(self.shape)

    @property
    def bits(self) -> int:
        """Bits per packed index: ceil(log2 K), 0 when every row holds one value."""
        return index_bits(self.codebook.shape[1])

    def decode(self) -> torch.Tensor:
        """The clustered tensor itself: float32, ``self.shape``."""
        groups = self.codebook.shape[0]
        flat = self.indices.reshape(groups, -1).long()
        return self.from_points(lookup(self.codebook, flat))

    def packed_nbytes(self) -> int:
        """Bytes of bit-packed indices plus codebook, before any gzip."""
        n = self.indices.numel()
        extra = self.sizes.numel() * 2 if self.granularity is Granularity.CHANNEL else 0
        return math.ceil(n * self.bits / 8) + self.codebook.numel() * 4 + extra


Clusterings = dict[int, tuple["ClusteredTensor", torch.Tensor]]  # k -> (clustered, decoded)


def lookup(codebook: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each index's codebook entry: ``codebook`` (G, K) or (G, K, d), ``index`` (G, N)
    long; (G, N) values or (G, N, d) vectors."""
    if codebook.dim() == 2:
        return codebook.gather(1, index)
    return codebook.gather(1, index.unsqueeze(-1).expand(-1, -1, codebook.shape[2]))


def scatter_sum(codebook: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per codebook entry, the sum of the ``values`` (G, N) or (G, N, d) its indices
    (G, N) give: a tensor of ``codebook``'s shape (the gradient of ``lookup``)."""
    if codebook.dim() == 3:
        index = index.unsqueeze(-1).expand(-1, -1, codebook.shape[2])
    return torch.zeros_like(codebook).scatter_add_(1, index, values)


def to_pairs(x: torch.Tensor) -> torch.Tensor:
    """``x`` (O, ...) with O even as (O/2 * rest, 2): the weights of output channels 2i
    and 2i + 1 at each position, in the order of the indices (O/2, ...)."""
    return x.reshape(x.shape[0] // 2, 2, -1).transpose(1, 2).reshape(-1, 2)


def from_pairs(pairs: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of ``to_pairs``: (O/2 * rest, 2) back to ``shape``."""
    return pairs.reshape(shape[0] // 2, -1, 2).transpose(1, 2).reshape(shape)


def pair_index_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
    """The shape of the indices of a tensor of ``shape`` stored as pairs: (O/2, ...)."""
    return (shape[0] // 2, *shape[1:])


def pairs_fit(shape: torch.Size | tuple[int, ...]) -> bool:
    """Whether a tensor of ``shape`` can be stored as pairs of output channels."""
    return len(shape) >= 2 and shape[0] % 2 == 0


def index_bits(k: int) -> int:
    """ceil(log2 k): bits an index into k values needs (0 for k = 1)."""
    return max(0, (k - 1).bit_length())


def cluster_tensor(
    values: torch.Tensor,
    k: int,
    method: Method | str = Method.KMEANS,
    granularity: Granularity | str = Granularity.TENSOR,
    seed: int = 0,
    name: str = "tensor",
    importance: torch.Tensor | None = None,
) -> ClusteredTensor:
    """Cluster ``values`` (any shape, floating point) to at most ``k`` shared values.

    With ``granularity="channel"`` each slice along dim 0 gets its own codebook;
    tensors with fewer than two dimensions fall back to one codebook.
    ``importance`` (the shape of ``values``, >= 0): per-value weights of the squared
    error, required by ``sensitive-kmeans`` (which minimises sum importance * error^2).
    ``name`` only labels error messages.
    """
    return cluster_many(values, [k], method, granularity, seed, name, importance)[k][0]


def cluster_many(values: torch.Tensor, ks: list[int], method: Method | str = Method.KMEANS,
                 granularity: Granularity | str = Granularity.TENSOR, seed: int = 0,
                 name: str = "tensor", importance: torch.Tensor | None = None) -> Clusterings:  # fmt: skip
    """``cluster_tensor`` for several k at once: k -> (clustered, decoded float32).

    k-means reduces each row to its distinct values or histogram once and fits every
    k on that reduction, so a sweep over k reads the weights once, not once per k.
    Each result equals what ``cluster_tensor`` returns for that k alone.
    """
    method = parse_enum(Method, method, "method")
    granularity = parse_enum(Granularity, granularity, "granularity")
    if not ks:
        raise QretrainError(f"no k given for {name}")
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K]
    if bad:
        raise QretrainError(f"k for {name} must be an int in [1, {MAX_K}]; got {bad[0]!r}")
    check_values(values, name)
    if method is Method.SENSITIVE:
        if importance is None:
            raise QretrainError(f"{name}: method 'sensitive-kmeans' needs the importance of "
                                "each value (compress.importance.fisher_importance)")  # fmt: skip
        if importance.shape != values.shape or not bool(torch.isfinite(importance).all()) \
                or bool((importance < 0).any()):  # fmt: skip
            raise QretrainError(f"{name}: importance must be finite, >= 0 and of shape "
                                f"{tuple(values.shape)}")  # fmt: skip
    elif importance is not None:
        raise QretrainError(f"{name}: importance applies to method 'sensitive-kmeans' only")
    return _cluster_many(values, ks, method, granularity, seed, importance)


def check_values(values: torch.Tensor, name: str) -> None:
    """Raise QretrainError naming ``name`` unless ``values`` can be clustered: floating
    point, not empty, finite (one scan)."""
    if not values.is_floating_point():
        raise QretrainError(f"{name} has dtype {values.dtype}; only floating point tensors cluster")
    if values.numel() == 0:
        raise QretrainError(f"{name} is empty (shape {tuple(values.shape)}); nothing to cluster")
    lo, hi = torch.aminmax(values.detach())  # NaN and inf propagate to min or max
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        bad = (~torch.isfinite(values)).sum().item()
        raise QretrainError(
            f"{name} has {bad} NaN or infinite value(s); clustering needs finite weights"
        )


def _cluster_many(values: torch.Tensor, ks: list[int], method: Method,
                  granularity: Granularity, seed: int,
                  importance: torch.Tensor | None = None) -> Clusterings:  # fmt: skip
    """``cluster_many`` on input it has checked: ks in [1, MAX_K], finite float values,
    importance (for ``sensitive-kmeans``) finite, >= 0, of the values' shape."""
    if granularity is Granularity.PAIRS and method is not Method.KMEANS:
        raise QretrainError(f"granularity 'pairs' clusters with method 'kmeans' only; got "
                            f"{method.value!r}")  # fmt: skip
    x = values.detach().to("cpu", torch.float32).contiguous()
    if granularity is Granularity.CHANNEL and x.dim() < 2:
        granularity = Granularity.TENSOR
    if granularity is Granularity.PAIRS:
        if pairs_fit(x.shape):
            return _cluster_pairs(x, ks, seed)
        granularity = Granularity.TENSOR  # no pairs of output channels: one scalar codebook
    rows = x.reshape(x.shape[0], -1) if granularity is Granularity.CHANNEL else x.reshape(1, -1)
    if method is Method.SENSITIVE:
        w = importance.detach().to("cpu", torch.float64).reshape(rows.shape)
        # A floor keeps every value's weight positive (dead inputs still get a centroid).
        w = w + 1e-6 * float(w.mean()) + 1e-30
        reduced = [_reduce(row, weights) for row, weights in zip(rows, w)]
    else:
        reduced = [_reduce(row) if method is Method.KMEANS else None for row in rows]
    results = {}
    for k in dict.fromkeys(ks):  # distinct, in the given order
        codebooks, indices, decoded, sq_error = [], [], torch.empty_like(rows), 0.0
        for row, red, out in zip(rows, reduced, decoded):
            codebook, idx = _cluster_flat(row, k, method, seed, red)
            sq_error += _decode_into(row, codebook, idx, out)
            codebooks.append(codebook)
            indices.append(idx)
        width = max(len(cb) for cb in codebooks)
        padded = torch.zeros(len(codebooks), width, dtype=torch.float32)
        for g, cb in enumerate(codebooks):
            padded[g, : len(cb)] = cb
            padded[g, len(cb) :] = cb[-1]  # rows stay sorted, so searchsorted finds indices
        clustered = ClusteredTensor(
            codebook=padded,
            sizes=torch.tensor([len(cb) for cb in codebooks], dtype=torch.int64),
            indices=torch.stack(indices).reshape(x.shape),
            k=k,
            method=method,
            granularity=granularity,
            sq_error=sq_error,
        )
        results[k] = (clustered, decoded.reshape(x.shape))
    return results


def _cluster_pairs(x: torch.Tensor, ks: list[int], seed: int) -> Clusterings:
    """``x`` (O, ...) float32, O even, as one codebook of at most k pairs of output
    channels, for each k: k -> (clustered, decoded float32 of x's shape)."""
    points = to_pairs(x)
    distinct, inverse = torch.unique(points, dim=0, return_inverse=True)  # once for every k
    results = {}
    for k in dict.fromkeys(ks):
        codebook, index = _pair_kmeans(points, distinct, inverse, k, seed)
        decoded = codebook[index.long()]
        clustered = ClusteredTensor(
            codebook=codebook.unsqueeze(0),
            sizes=torch.tensor([len(codebook)], dtype=torch.int64),
            indices=index.reshape(pair_index_shape(x.shape)),
            k=k,
            method=Method.KMEANS,
            granularity=Granularity.PAIRS,
            sq_error=float((points - decoded).double().square().sum()),
        )
        results[k] = (clustered, from_pairs(decoded, x.shape))
    return results


def _pair_kmeans(points: torch.Tensor, distinct: torch.Tensor, inverse: torch.Tensor, k: int,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Lloyd's k-means of ``points`` (n, 2) from a k-means++ start drawn (by ``seed``)
    from at most PAIR_SAMPLE of its ``distinct`` pairs (``inverse``: each point's):
    centroids (K, 2) float32, all in use, K <= k, and each point's index (n,) uint8.
    Points of at most k distinct pairs get those pairs.

    Not the exact optimum that 1-D k-means finds: Lloyd's rounds stop at a local one.
    """
    if len(distinct) <= k:
        return distinct, inverse.to(torch.uint8)
    generator = torch.Generator().manual_seed(seed)
    sample = distinct[torch.randperm(len(distinct), generator=generator)[:PAIR_SAMPLE]]
    chosen = [int(torch.randint(len(sample), (1,), generator=generator))]
    nearest = (sample - sample[chosen[0]]).square().sum(1)
    for _ in range(1, min(k, len(sample))):
        pick = int(torch.multinomial(nearest.double() + 1e-300, 1, generator=generator))
        chosen.append(pick)
        nearest = torch.minimum(nearest, (sample - sample[pick]).square().sum(1))
    centroids = sample[chosen].double()
    index = nearest_pairs(points, centroids.float())
    for _ in range(PAIR_ROUNDS):
        count = len(centroids)
        counts = torch.bincount(index, minlength=count).double()
        sums = torch.stack([torch.bincount(index, weights=points[:, d].double(), minlength=count)
                            for d in range(2)], 1)  # fmt: skip
        used = counts > 0
        centroids = torch.where(used[:, None], sums / counts.clamp(min=1)[:, None], centroids)
        moved = nearest_pairs(points, centroids.float())
        if torch.equal(moved, index):
            break
        index = moved
    counts = torch.bincount(index, minlength=len(centroids))
    keep = torch.nonzero(counts).squeeze(1)  # empty clusters dropped, the rest renumbered
    remap = torch.zeros(len(centroids), dtype=torch.int64)
    remap[keep] = torch.arange(len(keep))
    return centroids[keep].float(), remap[index].to(torch.uint8)


def nearest_pairs(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index (n,) int64 of each point's nearest centroid (the lowest index on a tie).
    Distances are computed term by term, not through a matrix product, so they and the
    choice are the same for any thread count."""
    index = torch.empty(len(points), dtype=torch.int64)
    c0, c1 = centroids[:, 0], centroids[:, 1]
    for at in range(0, len(points), PAIR_CHUNK):
        p = points[at : at + PAIR_CHUNK]
        distance = (p[:, :1] - c0).square_().add_((p[:, 1:] - c1).square_())
        index[at : at + PAIR_CHUNK] = distance.argmin(1)
    return index


def _decode_into(x: torch.Tensor, codebook: torch.Tensor, idx: torch.Tensor, out: torch.Tensor):
    """out = codebook[idx]; returns the squared error against x."""
    total = 0.0
    for start in range(0, x.numel(), CHUNK):
        y = torch.index_select(codebook, 0, idx[start : start + CHUNK].int())
        out[start : start + CHUNK] = y
        # float32 sums of CHUNK terms use pairwise summation: accurate to ~1e-7.
        total += (x[start : start + CHUNK] - y).square_().sum().item()
    return total


def _cluster_flat(
    x: torch.Tensor, k: int, method: Method, seed: int, reduced: _Reduced | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebook (K,) float32 ascending, all in use, K <= k; indices (n,) uint8.

    ``reduced``: ``_reduce(x)``, when k-means runs on x for several k.
    """
    if k == 1:  # every method's single centroid: the mean (importance-weighted: SENSITIVE)
        w = reduced.x_weights if method is Method.SENSITIVE else None
        mean = x.sum(dtype=torch.float64) / x.numel() if w is None \
            else (w * x.double()).sum() / w.sum()  # fmt: skip
        return mean.to(torch.float32).reshape(1), torch.zeros(x.numel(), dtype=torch.uint8)
    if method in (Method.KMEANS, Method.SENSITIVE):  # SENSITIVE always comes reduced
        return _kmeans(reduced or _reduce(x), k, seed)
    exact = _exact_if_few_values(x, k)
    if exact is not None:
        return exact
    if method is Method.EQUAL_COUNT:
        return _member_means(x, *_equal_count_indices(x, k))
    return _member_means(x, *_linear_indices(x, k))


def _member_means(x: torch.Tensor, idx: torch.Tensor, k: int, w: torch.Tensor | None = None):
    """Codebook = exact (or ``w``-weighted) mean of each cluster's members; empty ones
    dropped, equal merged."""
    sums = torch.zeros(k, dtype=torch.float64)
    counts = torch.zeros(k, dtype=torch.float64)
    for start in range(0, x.numel(), CHUNK):
        i = idx[start : start + CHUNK].long()
        part = x[start : start + CHUNK].double()
        if w is None:
            sums += torch.bincount(i, weights=part, minlength=k)
            counts += torch.bincount(i, minlength=k)
        else:
            weights = w[start : start + CHUNK]
            sums += torch.bincount(i, weights=part * weights, minlength=k)
            counts += torch.bincount(i, weights=weights, minlength=k)
    return _compact(sums / counts.clamp(min=1e-300), counts > 0, idx)


def _compact(means: torch.Tensor, used: torch.Tensor, idx: torch.Tensor):
    """Keep used entries, merge equal ones, sort ascending, and remap idx to match."""
    codebook, remap = torch.unique(means[used].to(torch.float32), return_inverse=True)
    if len(codebook) != len(means) or not torch.equal(remap, torch.arange(len(means))):
        lut = torch.zeros(len(means), dtype=torch.uint8)
        lut[used] = remap.to(torch.uint8)
        idx = _lookup(lut, idx)
    return codebook, idx


def _lookup(lut: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    out = torch.empty(keys.numel(), dtype=lut.dtype)
    for start in range(0, keys.numel(), CHUNK):
        out[start : start + CHUNK] = torch.index_select(lut, 0, keys[start : start + CHUNK].int())
    return out


def _exact_if_few_values(x: torch.Tensor, k: int):
    """(distinct values, indices) when x takes at most k distinct values, else None."""
    if x.numel() > EXACT_POINTS_MAX:
        lo, hi = torch.aminmax(x)
        if lo < hi and torch.count_nonzero(torch.histc(x, HIST_BINS, lo, hi)) > k:
            return None  # more non-empty bins than k: more than k distinct values
    values, inverse = torch.unique(x, return_inverse=True)
    return (values, inverse.to(torch.uint8)) if len(values) <= k else None


@dataclass
class _Reduced:
    """A 1-D tensor as weighted points for k-means: its distinct values (small tensors)
    or the centres of a fine histogram's non-empty bins (large ones)."""

    x: torch.Tensor
    points: torch.Tensor  # (P,) float64 ascending
    weights: torch.Tensor  # (P,) float64 counts
    inverse: torch.Tensor | None  # (n,) point of each value; None for a histogram
    lo: float = 0.0  # histogram range start
    scale: float = 0.0  # histogram bins per unit
    nonempty: torch.Tensor | None = None  # (P,) histogram bin of each point
    x_weights: torch.Tensor | None = None  # (n,) float64 per-value weights (sensitive-kmeans)


def _reduce(x: torch.Tensor, w: torch.Tensor | None = None) -> _Reduced:
    """Points and their weights: counts, or sums of ``w`` (n,) float64 when given."""
    if x.numel() <= EXACT_POINTS_MAX:
        values, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
        weights = counts.double() if w is None else torch.bincount(inverse, weights=w,
                                                                   minlength=len(values))  # fmt: skip
        return _Reduced(x, values.double(), weights, inverse, x_weights=w)
    lo, hi = (v.item() for v in torch.aminmax(x))
    if lo == hi:
        total = torch.tensor([float(x.numel())], dtype=torch.float64) if w is None \
            else w.sum().reshape(1)  # fmt: skip
        return _Reduced(x, torch.tensor([lo], dtype=torch.float64), total,
                        torch.zeros(x.numel(), dtype=torch.int64), x_weights=w)  # fmt: skip
    scale = HIST_BINS / (hi - lo)
    if w is None:
        # histc bins as _bins does up to rounding at bin edges; the lookup table in
        # _kmeans covers every bin, so a value rounded into a neighbouring bin still
        # gets a cluster.
        weights = torch.histc(x, HIST_BINS, lo, hi).to(torch.int64).double()
    else:  # histc takes no weights: bincount over the same bins, a chunk at a time
        weights = torch.zeros(HIST_BINS, dtype=torch.float64)
        for start in range(0, x.numel(), CHUNK):
            bins = _bins(x[start : start + CHUNK], lo, scale)
            weights += torch.bincount(bins.long(), weights=w[start : start + CHUNK],
                                      minlength=HIST_BINS)  # fmt: skip
    nonempty = torch.nonzero(weights).squeeze(1)
    centres = lo + (nonempty.double() + 0.5) / scale
    return _Reduced(x, centres, weights[nonempty], None, lo, scale, nonempty, x_weights=w)


def _kmeans(red: _Reduced, k: int, seed: int):
    """1-D k-means on the distinct values (small x) or a fine histogram (large x)."""
    x = red.x
    if red.inverse is not None:
        if len(red.points) <= k:
            return red.points.to(torch.float32), red.inverse.to(torch.uint8)
        edges, _ = kmeans_1d(red.points.numpy(), red.weights.numpy(), k, seed)
        point_cluster = torch.from_numpy(np.repeat(np.arange(len(edges) - 1), np.diff(edges)))
        return _member_means(x, point_cluster.to(torch.uint8)[red.inverse], len(edges) - 1,
                             red.x_weights)  # fmt: skip
    if len(red.points) <= k:  # exact values: optimal for any weights
        exact = _exact_if_few_values(x, k)
        if exact is not None:
            return exact
    centres, weights, nonempty = red.points, red.weights, red.nonempty
    edges, _ = kmeans_1d(centres.numpy(), weights.numpy(), k, seed)
    edges = torch.from_numpy(edges)
    # Codebook from the histogram: member means to within half a bin (range / 2^17),
    # which saves a weighted pass over every weight.
    cum_w = torch.cat([torch.zeros(1, dtype=torch.float64), weights.cumsum(0)])
    cum_s = torch.cat([torch.zeros(1, dtype=torch.float64), (weights * centres).cumsum(0)])
    means = (cum_s[edges[1:]] - cum_s[edges[:-1]]) / (cum_w[edges[1:]] - cum_w[edges[:-1]])
    # Every bin, empty ones too, maps to the cluster whose run of bins covers it.
    first_bins = nonempty[edges[1:-1]]
    bin_cluster = torch.bucketize(torch.arange(HIST_BINS), first_bins, right=True)
    bin_cluster = bin_cluster.to(torch.uint8)
    idx = torch.empty(x.numel(), dtype=torch.uint8)
    for start in range(0, x.numel(), CHUNK):
        bins = _bins(x[start : start + CHUNK], red.lo, red.scale)
        idx[start : start + CHUNK] = torch.index_select(bin_cluster, 0, bins)
    return _compact(means, torch.ones(len(means), dtype=torch.bool), idx)


def _bins(chunk: torch.Tensor, lo: float, scale: float) -> torch.Tensor:
    """Histogram bin of each value: floor((x - lo) * scale), the maximum in the last bin."""
    return ((chunk - lo) * scale).to(torch.int32).clamp_(max=HIST_BINS - 1)


def _equal_count_indices(x: torch.Tensor, k: int) -> tuple[torch.Tensor, int]:
    """Sort, cut into k runs whose lengths differ by at most one (the seed's Figure 2)."""
    n = x.numel()
    order = torch.argsort(x, stable=True)
    lengths = torch.full((k,), n // k, dtype=torch.int64)
    lengths[: n % k] += 1
    idx = torch.empty(n, dtype=torch.uint8)
    idx[order] = torch.repeat_interleave(torch.arange(k, dtype=torch.uint8), lengths)
    return idx, k


def _linear_indices(x: torch.Tensor, k: int) -> tuple[torch.Tensor, int]:
    """Nearest of k centroids evenly spaced over [min, max]."""
    if k == 1:
        return torch.zeros(x.numel(), dtype=torch.uint8), 1
    lo, hi = (v.item() for v in torch.aminmax(x))
    step = (hi - lo) / (k - 1)
    return ((x - lo) / step).round_().clamp_(0, k - 1).to(torch.uint8), k
