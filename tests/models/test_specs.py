import json

import pytest
import torch

import qretrain
from qretrain.models import ArchSpec, get_arch, load_model


def test_unknown_spec_lists_known_forms():
    with pytest.raises(
        ValueError, match=r"unknown model spec 'vgg16'; known forms: torchvision:NAME"
    ):
        load_model("vgg16")


def test_unknown_torchvision_name_lists_models():
    with pytest.raises(
        ValueError, match=r"torchvision has no model 'vgg17'; its image classifiers: .*vgg16"
    ):
        load_model("torchvision:vgg17")


def test_importable_spec_records_its_arch():
    model = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16)
    arch = get_arch(model)
    assert arch.spec == "qretrain.zoo:vgg_small" and arch.kwargs == {"width": 4, "hidden": 16}
    assert arch.input_shape == (1, 28, 28)
    assert ArchSpec.from_dict(json.loads(arch.to_json())) == arch
    with pytest.raises(ValueError, match="cannot import module 'no_such_pkg.mod'"):
        load_model("no_such_pkg.mod:make")
    with pytest.raises(ValueError, match="has no attribute 'nothing'"):
        load_model("qretrain.cli:nothing")
    with pytest.raises(ValueError, match="qretrain.zoo has no model 'nothing'; known: vgg_small"):
        load_model("qretrain.zoo:nothing")


def test_weights_file_loads_safely(tmp_path, tiny_vgg):
    path = tmp_path / "w.pth"
    torch.save(tiny_vgg.state_dict(), path)
    model = load_model("qretrain.zoo:vgg_small", weights=path, width=4, hidden=32)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, tiny_vgg.state_dict()[name])


def test_weights_that_do_not_fit_name_the_tensors(tmp_path, tiny_vgg):
    path = tmp_path / "w.pth"
    torch.save(tiny_vgg.state_dict(), path)
    with pytest.raises(
        ValueError, match=r"does not fit the architecture: shape: features.0.weight"
    ):
        load_model("qretrain.zoo:vgg_small", weights=path, width=8, hidden=32)


class NotAStateDict:
    pass


def test_pickled_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": NotAStateDict()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_model("qretrain.zoo:vgg_small", weights=path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("qretrain.zoo:vgg_small", weights=tmp_path / "missing.pth")


def test_efficientnet_lite0_is_the_real_pretrained_model():
    model = load_model("efficientnet-lite0")
    infos = qretrain.describe_tensors(model)
    assert len({i.layer for i in infos if i.layer}) == 50
    assert sum(i.numel for i in infos if i.is_parameter) == 4_652_008
    contract = get_arch(model).contract
    assert contract.size == 224 and contract.resize == 256
    assert contract.mean[0] == pytest.approx(127 / 255) and contract.std[0] == pytest.approx(
        128 / 255
    )


def test_torchscript_spec(tmp_path, tiny_vgg, images):
    path = tmp_path / "m.pt"
    torch.jit.script(tiny_vgg).save(str(path))
    model = load_model(str(path))
    assert torch.allclose(model(images), tiny_vgg(images))
    with pytest.raises(FileNotFoundError, match="TorchScript file"):
        load_model(str(tmp_path / "none.pt"))


def test_named_specs_win_over_the_importable_fallback():
    from qretrain.models.specs import resolve_builder

    builder = resolve_builder("teacher:vgg")  # resolves without training anything
    assert builder.build.__qualname__.startswith("_teacher")
    assert builder.contract.shape == (1, 28, 28)
    with pytest.raises(ValueError, match="unknown teacher 'alexnet'; known: vgg, resnet"):
        resolve_builder("teacher:alexnet")
