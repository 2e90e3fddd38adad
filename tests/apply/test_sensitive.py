"""sensitive-kmeans: k-means weighted by each weight's Fisher information on data."""

import copy

import numpy as np
import pytest
import torch

import qretrain
import qretrain.zoo
from qretrain.cluster import clusters_of
from qretrain.cluster.tensor import cluster_tensor
from qretrain.apply.importance import fisher_importance
from qretrain.data.sets import tensor_set


def make_data(n=24):
    rng = np.random.default_rng(0)
    ds = tensor_set("random", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), None)
    ds.contract = qretrain.zoo.vgg_small.contract
    return ds


@pytest.mark.parametrize("n", [3000, 200_000])  # distinct values, and the histogram path
def test_weighted_kmeans_lowers_the_weighted_error(n):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g)
    w = torch.rand(n, generator=g) ** 4
    plain = cluster_tensor(x, 8)
    weighted = cluster_tensor(x, 8, "sensitive-kmeans", importance=w)
    assert weighted.method.value == "sensitive-kmeans" and int(weighted.sizes.max()) <= 8

    def cost(c):
        return float((w * (c.decode() - x) ** 2).sum())

    assert cost(weighted) < cost(plain)
    # Equal importance everywhere is plain k-means.
    same = cluster_tensor(x, 8, "sensitive-kmeans", importance=torch.ones(n))
    torch.testing.assert_close(same.decode(), plain.decode(), atol=1e-6, rtol=0)
    one = cluster_tensor(x, 1, "sensitive-kmeans", importance=w)
    assert float(one.codebook) == pytest.approx(float((w * x).sum() / w.sum()), rel=1e-5)


def test_importance_is_the_fisher_diagonal_and_changes_nothing(tiny_vgg):
    state = {k: v.clone() for k, v in tiny_vgg.state_dict().items()}
    names = ["features.0.weight", "classifier.7.weight"]
    importance = fisher_importance(tiny_vgg, make_data(), names)
    assert set(importance) == set(names)
    for name in names:
        assert importance[name].shape == state[name].shape
        assert bool((importance[name] >= 0).all()) and float(importance[name].sum()) > 0
    assert all(torch.equal(v, state[k]) for k, v in tiny_vgg.state_dict().items())
    assert all(p.grad is None for p in tiny_vgg.parameters())
    other = fisher_importance(tiny_vgg, make_data(), names, seed=1)  # other sampled labels
    assert not torch.equal(other[names[1]], importance[names[1]])


def test_cluster_with_sensitive_kmeans_needs_data(tiny_vgg):
    plan = {"method": "sensitive-kmeans", "rules": [{"type": "Conv2d", "k": 4}]}
    before = copy.deepcopy(tiny_vgg.state_dict())
    with pytest.raises(ValueError, match="use method 'sensitive-kmeans'.*give data"):
        qretrain.cluster_(tiny_vgg, plan)
    assert all(torch.equal(v, before[k]) for k, v in tiny_vgg.state_dict().items())
    qretrain.cluster_(tiny_vgg, plan, data=make_data())
    books = clusters_of(tiny_vgg)
    assert books and all(c.method.value == "sensitive-kmeans" for c in books.values())
    assert all(tiny_vgg.state_dict()[n].unique().numel() <= 4 for n in books)
    with pytest.raises(ValueError, match="importance applies to method 'sensitive-kmeans' only"):
        cluster_tensor(torch.randn(10), 2, importance=torch.ones(10))
    with pytest.raises(ValueError, match="importance must be finite, >= 0"):
        cluster_tensor(torch.randn(10), 2, "sensitive-kmeans", importance=-torch.ones(10))


def test_compress_cli_takes_data_for_sensitive_rules(tmp_path, tiny_vgg, capsys):
    from qretrain.cli.main import main

    qretrain.save(tiny_vgg, tmp_path / "m.h5")
    (tmp_path / "plan.yaml").write_text(
        "method: sensitive-kmeans\nrules:\n  - type: Conv2d\n    k: 4\n"
    )
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8))
    argv = ["compress", str(tmp_path / "m.h5"), "--plan", str(tmp_path / "plan.yaml"),
            "-o", str(tmp_path / "out.h5"), "--quiet", "--trust-code"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give data (compress --data D" in err[0]
    assert not (tmp_path / "out.h5").exists()
    assert main([*argv, "--data", str(tmp_path / "d.npz")]) == 0
    books = qretrain.codebooks(qretrain.load(tmp_path / "out.h5", trust_code=True))
    assert books and {c.method.value for c in books.values()} == {"sensitive-kmeans"}
