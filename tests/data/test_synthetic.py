"""Synthetic inputs (data.synthetic): batch-norm statistics matching, cached, seeded."""

import pytest
import torch

import qretrain
from qretrain.cli.main import main
from qretrain.data import synthetic


def bn_gap(model, x):
    """Sum over batch norms of the squared distance of batch mean/std to running ones."""
    gaps = []

    def hook(m, inputs, out):
        v = inputs[0]
        mean, std = v.mean((0, 2, 3)), v.var((0, 2, 3), unbiased=False).add(m.eps).sqrt()
        gaps.append(
            ((mean - m.running_mean) ** 2).sum()
            + ((std - (m.running_var + m.eps).sqrt()) ** 2).sum()
        )

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.BatchNorm2d)]  # fmt: skip
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return float(sum(gaps))


def calibrated(model):
    """Running statistics of smooth random images, as training would leave them (random
    statistics may be unreachable by any input)."""
    x = (
        torch.nn.functional.avg_pool2d(
            torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(5)), 5, 1, 2
        )
        * 3
        + 0.5
    )
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the one batch
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def test_synthetic_inputs_match_batch_norm_statistics_and_are_cached(tiny_resnet, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path))
    monkeypatch.setattr(synthetic, "DEFAULT_STEPS", 80)
    tiny_resnet = calibrated(tiny_resnet)
    state = {k: v.clone() for k, v in tiny_resnet.state_dict().items()}
    ds = qretrain.load_dataset("synthetic:12", teacher=tiny_resnet)
    assert len(ds) == 12 and not ds.labeled and ds[0][0].shape == (1, 28, 28)
    images = torch.stack([ds[i][0] for i in range(12)])
    noise = torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert bn_gap(tiny_resnet, images) < 0.02 * bn_gap(tiny_resnet, noise)
    assert all(torch.equal(v, state[k]) for k, v in tiny_resnet.state_dict().items())
    assert len(list((tmp_path / "synthetic").glob("*.npy"))) == 1
    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "_batch", lambda *a, **k: pytest.fail("not read from the cache"))
        again = qretrain.load_dataset("synthetic:12", teacher=tiny_resnet)
    assert torch.equal(torch.stack([again[i][0] for i in range(12)]), images)
    other = qretrain.load_dataset("synthetic:12", seed=1, teacher=tiny_resnet)
    assert not torch.equal(torch.stack([other[i][0] for i in range(12)]), images)


def test_synthetic_needs_a_teacher_with_batch_norm(tiny_vgg, tmp_path, monkeypatch):
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="'synthetic:8' is made from a teacher"):
        qretrain.load_dataset("synthetic:8")
    with pytest.raises(ValueError, match="VGGSmall has no batch-norm layer"):
        qretrain.load_dataset("synthetic:8", teacher=tiny_vgg)
    assert not (tmp_path / "synthetic").exists() or not any((tmp_path / "synthetic").iterdir())


def test_retrain_cli_refuses_synthetic_for_a_model_without_batch_norm(retrain_files, capsys,
                                                                      tmp_path, monkeypatch):  # fmt: skip
    folder = retrain_files(16)
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path / "cache"))
    out = folder / "out.h5"
    argv = ["retrain", str(folder / "student.h5"), "--teacher", str(folder / "teacher.h5"),
            "--data", "synthetic:8", "-o", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no batch-norm layer" in err[0]
    assert not out.exists() and not out.with_suffix(".json").exists()
