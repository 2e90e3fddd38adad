import json

import pytest
import torch

import qretrain


@pytest.fixture
def teachers():
    """The module, imported when a test runs rather than at collection: importing it
    registers ``teacher:`` before the built-in specs, and ``known_specs()`` lists them
    in the order they registered."""
    from qretrain.assets import teachers

    return teachers


@pytest.fixture
def tiny_teachers(teachers, monkeypatch, tmp_path):
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path))
    monkeypatch.setitem(
        teachers.TEACHERS, "vgg", ("qretrain.zoo:vgg_small", {"width": 4, "hidden": 16})
    )
    return tmp_path


def test_teacher_is_trained_once_then_loaded_from_the_cache(teachers, tiny_teachers, monkeypatch):
    first = teachers.teacher("vgg", epochs=1, seed=0, train_limit=256, progress=False)
    path = teachers.teacher_path("vgg", 1, 0, 256)
    assert (
        path.parent == tiny_teachers / "teachers"
        and path.name == f"vgg-e1-s0-n256-f{qretrain.storage.FORMAT_VERSION}.h5"
    )
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["train_images"] == 256 and 0.0 <= record["test_top1"] <= 1.0
    assert record["test_images"] == 10_000

    def no_training(*args, **kwargs):
        raise AssertionError("the cached teacher was trained again")

    monkeypatch.setattr(teachers, "train_classifier", no_training)
    second = teachers.teacher("vgg", epochs=1, seed=0, train_limit=256)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(first(x), second(x))
    assert qretrain.models.get_arch(second).spec == "qretrain.zoo:vgg_small"


def test_cache_is_keyed_by_epochs_seed_and_name(teachers):
    names = {teachers.teacher_path(n, e, s).name for n in ("vgg", "resnet") for e in (1, 2)
             for s in (0, 1)}  # fmt: skip
    assert len(names) == 8
    with pytest.raises(ValueError, match="unknown teacher 'alexnet'; known: vgg, resnet"):
        teachers.teacher_path("alexnet")
