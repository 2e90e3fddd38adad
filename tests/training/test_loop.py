"""The supervised training loop the reference teachers use."""

import numpy as np
import pytest
import torch

import qretrain
from qretrain.data.sets import tensor_set
from qretrain.training import TrainConfig, train_classifier
from qretrain.training.loop import shift_and_flip


def labeled(n=128, seed=0):
    """Two classes a net can tell apart: bright top half or bright bottom half (the
    loop's augmentation flips left and right, so left/right would not do)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 2, n)
    for i, label in enumerate(y):
        x[i, :14] += 150 if label == 0 else 0
        x[i, 14:] += 150 if label == 1 else 0
    ds = tensor_set("halves", x, y)
    ds.contract = qretrain.zoo.vgg_small.contract
    return ds


def trained(seed: int) -> torch.nn.Module:
    torch.manual_seed(100)  # the same start for every seed: only the loop's seed varies
    model = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16, num_classes=2)
    train_classifier(model, labeled(), TrainConfig(epochs=2, batch_size=32, seed=seed),
                     progress=False)  # fmt: skip
    return model


def test_training_learns_and_the_loss_falls():
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16, num_classes=2)
    history = train_classifier(model, labeled(256), TrainConfig(epochs=4, batch_size=32),
                               progress=False)  # fmt: skip
    assert history.loss[-1] < history.loss[0]
    result = qretrain.evaluate(model.eval(), labeled(64, seed=1), progress=False)
    assert result.top1 > 0.9
    assert history.seconds > 0 and history.samples_per_second > 0


def test_the_seed_decides_the_run():
    a, b, c = trained(0), trained(0), trained(1)
    pairs = list(zip(a.parameters(), b.parameters(), c.parameters()))
    assert all(torch.equal(p, q) for p, q, _ in pairs)
    assert not all(torch.equal(p, r) for p, _, r in pairs)


def test_shift_and_flip_keeps_shapes_and_follows_its_generator():
    x = torch.rand(8, 1, 28, 28)
    out = [shift_and_flip(x, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert out[0].shape == x.shape and torch.equal(out[0], out[1])
    assert not torch.equal(out[0], out[2])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="must be positive"):
        TrainConfig(epochs=0)
