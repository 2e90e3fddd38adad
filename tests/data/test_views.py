"""Augmented views (data.views): a fixed, seeded dataset of crops, flips and mixes."""

import numpy as np
import pytest
import torch

import qretrain
from qretrain.data.sets import tensor_set
from qretrain.data.views import augmented
from qretrain.models.contract import InputContract

CONTRACT = InputContract(channels=3, size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def base(n=6):
    rng = np.random.default_rng(0)
    ds = tensor_set("pool", rng.integers(0, 256, (n, 3, 48, 64), dtype=np.uint8), None)
    ds.contract = CONTRACT
    return ds


def test_views_are_a_fixed_function_of_the_seed():
    views = augmented(base(), 20, seed=0)
    assert len(views) == 20 and not views.labeled
    first = torch.stack([views[i][0] for i in range(20)])
    assert first.shape == (20, 3, 32, 32) and torch.isfinite(first).all()
    again = torch.stack([augmented(base(), 20, seed=0)[i][0] for i in range(20)])
    assert torch.equal(first, again)
    other = torch.stack([augmented(base(), 20, seed=1)[i][0] for i in range(20)])
    assert not torch.equal(first, other)
    assert views.fingerprint() != augmented(base(), 20, seed=1).fingerprint()
    assert len({first[i].numpy().tobytes() for i in range(20)}) == 20  # all different
    assert views[0][1] == -1


def test_without_mixing_a_view_is_one_image_cropped():
    """mix 0: every view's pixels come from one image's crop (checked by a constant image)."""
    images = np.stack([np.full((3, 48, 64), 40 * (i + 1), np.uint8) for i in range(4)])
    ds = tensor_set("flat", images, None)
    ds.contract = CONTRACT
    levels = {round((40 * (i + 1) / 255 - 0.5) / 0.25, 4) for i in range(4)}
    unmixed = augmented(ds, 30, seed=0, mix=0.0)
    for i in range(30):
        values = {round(v, 4) for v in unmixed[i][0].unique().tolist()}
        assert len(values) == 1 and values <= levels
    mixed = augmented(ds, 30, seed=0, mix=1.0)
    assert any(len(mixed[i][0].unique()) > 1 for i in range(30))  # blends or pasted boxes


def test_bad_views_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="views must be an int >= 1; got 0"):
        augmented(base(), 0)
    with pytest.raises(ValueError, match="need a dataset with at least one image"):
        augmented(base().subset(torch.tensor([], dtype=torch.long)), 4)
    with pytest.raises(ValueError, match="mix must be in"):
        augmented(base(), 4, mix=1.5)


def test_load_dataset_takes_views():
    ds = qretrain.load_dataset("opencv-frames:photos", CONTRACT, limit=3, views=5)
    assert len(ds) == 5 and "5 augmented views" in ds.describe()
