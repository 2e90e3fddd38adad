import math

import numpy as np
import pytest
import torch

from qretrain.cluster import Granularity, Method, cluster_tensor, index_bits
from qretrain.cluster import tensor as tensor_module
from qretrain.cluster.kmeans1d import _exact_edges, _Prefix

METHODS = list(Method)


def run(x: torch.Tensor, k: int, method: Method, **kw):
    """cluster_tensor; sensitive-kmeans with equal importance everywhere (plain k-means:
    tests/compress/test_sensitive.py checks the weighting itself)."""
    if method is Method.SENSITIVE:
        kw["importance"] = torch.ones_like(x)
    return cluster_tensor(x, k, method, **kw)


def sample(dist: str, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dist == "gaussian":
        return torch.randn(n, generator=g)
    u = torch.rand(n, generator=g) - 0.5  # Laplacian by inverse CDF
    return -torch.sign(u) * torch.log1p(-2 * u.abs())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1, 2, 7, 16, 256])
def test_at_most_k_values_and_decode_matches_indices(method, k):
    x = sample("gaussian", 5000).reshape(50, 100)
    c = run(x, k, method)
    decoded = c.decode()
    assert decoded.shape == x.shape
    assert decoded.unique().numel() <= k
    assert c.codebook.shape == (1, int(c.sizes[0]))
    assert torch.all(c.codebook[0, 1:] > c.codebook[0, :-1])  # sorted, no duplicates
    assert set(c.indices.unique().tolist()) == set(range(int(c.sizes[0])))  # all in use
    assert c.sq_error == pytest.approx(((decoded - x) ** 2).sum().item(), rel=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_k1_gives_the_mean(method):
    x = sample("laplace", 999)
    c = run(x, 1, method)
    assert c.bits == 0
    assert c.codebook.item() == pytest.approx(x.double().mean().item(), abs=1e-6)


@pytest.mark.parametrize("k", [2, 3, 10, 64])
def test_equal_count_populations_differ_by_at_most_one(k):
    x = sample("gaussian", 1001)
    c = cluster_tensor(x, k, Method.EQUAL_COUNT)
    counts = torch.bincount(c.indices.long())
    assert len(counts) == k and counts.max() - counts.min() <= 1


def test_linear_centroids_are_member_means_of_evenly_spaced_bins():
    x = sample("gaussian", 3000)
    c = cluster_tensor(x, 8, Method.LINEAR)
    for j, value in enumerate(c.codebook[0]):
        members = x[c.indices == j]
        assert value.item() == pytest.approx(members.double().mean().item(), abs=1e-6)
    # Members of one bin lie within half a step of the evenly spaced centroid.
    step = (x.max() - x.min()) / 7
    assert (c.decode() - x).abs().max() <= step + 1e-6


@pytest.mark.parametrize("dist", ["gaussian", "laplace"])
@pytest.mark.parametrize("k", [2, 4, 16, 64, 256])
@pytest.mark.parametrize("n", [3000, 200_000])  # exact-values path and histogram path
def test_kmeans_error_at_most_equal_count_and_linear(dist, k, n):
    x = sample(dist, n, seed=k)
    errors = {m: run(x, k, m).sq_error for m in METHODS}
    assert errors[Method.KMEANS] <= errors[Method.EQUAL_COUNT] * (1 + 1e-6)
    assert errors[Method.KMEANS] <= errors[Method.LINEAR] * (1 + 1e-6)


@pytest.mark.parametrize("dist", ["gaussian", "laplace"])
@pytest.mark.parametrize("k", [2, 5, 8, 32])
def test_kmeans_within_0_1_percent_of_exact_on_small_tensors(dist, k):
    x = sample(dist, 600, seed=k)
    values, counts = np.unique(x.double().numpy(), return_counts=True)
    prefix = _Prefix.of(values, counts.astype(float))
    optimum = prefix.cluster_stats(_exact_edges(prefix, len(values), k))[2].sum()
    assert cluster_tensor(x, k).sq_error <= optimum * 1.001 + 1e-9


def test_histogram_path_close_to_exact_values_path(monkeypatch):
    """Binning 200k weights into 65,536 bins costs well under 0.5% of the error."""
    x = sample("laplace", 200_000, seed=3)
    binned = cluster_tensor(x, 16).sq_error
    monkeypatch.setattr(tensor_module, "EXACT_POINTS_MAX", 1 << 20)
    exact_values = cluster_tensor(x, 16).sq_error
    assert binned <= exact_values * 1.005


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [500, 100_000])
def test_exact_when_k_at_least_distinct_values(method, n):
    levels = torch.tensor([-0.75, -0.1, 0.0, 0.3, 2.5])
    x = levels[torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(0))]
    c = run(x, 8, method)
    assert torch.equal(c.decode(), x)
    assert c.sq_error == 0.0
    assert torch.equal(c.codebook[0], levels)  # only values in use, sorted
    assert c.bits == 3


def test_per_channel_gives_one_codebook_per_output_channel():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.01, 0.1, 1.0, 10.0]).reshape(4, 1, 1, 1)
    x = torch.randn(4, 3, 5, 5, generator=g) * scales
    c = cluster_tensor(x, 4, granularity="channel")
    assert c.granularity is Granularity.CHANNEL
    assert c.codebook.shape == (4, 4) and c.sizes.tolist() == [4, 4, 4, 4]
    decoded = c.decode()
    for ch in range(4):
        assert decoded[ch].unique().numel() <= 4
        row = cluster_tensor(x[ch], 4)  # the same channel clustered alone
        assert torch.equal(decoded[ch], row.decode())
    per_tensor = cluster_tensor(x, 4)
    assert c.sq_error < per_tensor.sq_error


def test_per_channel_rows_with_fewer_values_keep_sorted_padding():
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    c = cluster_tensor(x, 4, granularity="channel")
    assert c.sizes.tolist() == [1, 4]
    assert torch.all(c.codebook[:, 1:] >= c.codebook[:, :-1])
    assert torch.equal(c.decode(), x)


def test_one_dimensional_tensor_per_channel_falls_back_to_one_codebook():
    c = cluster_tensor(sample("gaussian", 100), 4, granularity="channel")
    assert c.granularity is Granularity.TENSOR and c.codebook.shape[0] == 1


def test_deterministic_for_a_seed(monkeypatch):
    from qretrain.cluster import kmeans1d

    monkeypatch.setattr(kmeans1d, "EXACT_DP_MAX_POINTS", 0)  # the seeded (Lloyd) path
    x = sample("laplace", 50_000)
    a, b = cluster_tensor(x, 64, seed=3), cluster_tensor(x, 64, seed=3)
    assert torch.equal(a.codebook, b.codebook) and torch.equal(a.indices, b.indices)
    # Another seed may pick the same best start, but not for every seed.
    others = [cluster_tensor(x, 64, seed=s) for s in range(4, 12)]
    assert any(not torch.equal(a.codebook, o.codebook) for o in others)


@pytest.mark.parametrize(
    "k, message",
    [(0, r"k for w must be an int in \[1, 256\]; got 0"),
     (257, r"got 257"), (2.0, r"got 2.0"), (True, r"got True")],
)  # fmt: skip
def test_bad_k(k, message):
    with pytest.raises(ValueError, match=message):
        cluster_tensor(torch.ones(4), k, name="w")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(bad):
    x = torch.randn(10)
    x[3] = bad
    before = x.clone()
    with pytest.raises(ValueError, match=r"fc.weight has 1 NaN or infinite value"):
        cluster_tensor(x, 4, name="fc.weight")
    assert torch.equal(x.nan_to_num(), before.nan_to_num())  # input untouched


def test_empty_and_integer_tensors_are_refused():
    with pytest.raises(ValueError, match=r"w is empty \(shape \(0, 3\)\)"):
        cluster_tensor(torch.empty(0, 3), 4, name="w")
    with pytest.raises(ValueError, match="only floating point"):
        cluster_tensor(torch.arange(5), 4, name="w")


def test_unknown_method_lists_allowed_values():
    with pytest.raises(ValueError, match="method must be one of 'kmeans', 'equal-count'"):
        cluster_tensor(torch.ones(4), 2, method="median")


@pytest.mark.parametrize("k, bits", [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (32, 5), (256, 8)])
def test_index_bits(k, bits):
    assert index_bits(k) == bits == (math.ceil(math.log2(k)) if k > 1 else 0)


def test_pairs_give_one_codebook_of_output_channel_pairs():
    """Weights [2i, ...] and [2i + 1, ...] come from one pair; at the bits of a scalar
    codebook of 4 values, 16 pairs fit correlated channels better."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(32, 1, 8, 3, generator=g)
    x = (base + 0.2 * torch.randn(64, 1, 8, 3, generator=g).reshape(32, 2, 8, 3)).reshape(64, 8, 3)
    c = cluster_tensor(x, 16, granularity="pairs")
    assert c.granularity is Granularity.PAIRS and c.vector == 2
    assert c.codebook.shape == (1, 16, 2) and c.indices.shape == (32, 8, 3) and c.shape == x.shape
    assert c.bits == 4  # per pair: 2 bits a weight
    decoded = c.decode()
    rows = decoded.reshape(32, 2, -1)
    entries = c.codebook[0][c.indices.reshape(32, -1).long()]  # (32, 24, 2)
    assert torch.equal(rows, entries.transpose(1, 2))
    assert c.sq_error == pytest.approx(((decoded - x) ** 2).sum().item(), rel=1e-5)
    assert c.sq_error < cluster_tensor(x, 4).sq_error
    assert c.packed_nbytes() == 32 * 24 * 4 // 8 + 16 * 2 * 4


def test_pairs_are_exact_with_few_distinct_pairs_and_fall_back_without_pairs():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [3.0, 4.0]])
    c = cluster_tensor(x, 2, granularity="pairs")
    assert torch.equal(c.decode(), x) and c.sq_error == 0
    for shape in [(5, 4), (12,)]:  # odd output channels; one dimension
        c = cluster_tensor(torch.randn(shape), 4, granularity="pairs")
        assert c.granularity is Granularity.TENSOR and c.codebook.shape == (1, 4)


def test_pairs_are_deterministic_for_a_seed_and_change_with_it():
    x = sample("laplace", 40_000, seed=3).reshape(200, 200)
    a, b, other = (cluster_tensor(x, 64, granularity="pairs", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.codebook, b.codebook) and torch.equal(a.indices, b.indices)
    assert not torch.equal(a.codebook, other.codebook)


def test_pairs_cluster_with_kmeans_only():
    with pytest.raises(ValueError, match="granularity 'pairs' clusters with method 'kmeans' only"):
        cluster_tensor(torch.randn(4, 4), 4, Method.LINEAR, granularity="pairs")
