"""A user's model facts: class count and input contract, stated once and kept in files;
torchvision and timm contracts from their documentation; nothing is ever downloaded."""

import logging
import re

import pytest
import torch
import torchvision

import qretrain
from qretrain.cli.main import main
from qretrain.models import Origin, get_arch, load_model
from qretrain.models.specs import make_builder, resolve_builder

FACTS = {"size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture
def own_weights(tmp_path):
    """A MobileNetV3-Small state dict with 10 classes, as a user would have one."""
    torch.manual_seed(0)
    path = tmp_path / "mine.pth"
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=10).state_dict(), path)
    return path


@pytest.mark.parametrize("name,size,resize,interpolation", [
    ("resnet18", 224, 256, "bilinear"),
    ("regnet_x_400mf", 224, 232, "bilinear"),
    ("swin_t", 224, 232, "bicubic"),
    ("inception_v3", 299, 342, "bilinear"),
])  # fmt: skip
def test_torchvision_contract_is_its_weights_documented_transforms(name, size, resize,
                                                                   interpolation):  # fmt: skip
    contract = resolve_builder(f"torchvision:{name}").contract
    assert (contract.size, contract.resize, contract.interpolation) == (size, resize, interpolation)


@pytest.mark.parametrize("name,kind", [
    ("fasterrcnn_mobilenet_v3_large_320_fpn", "detection"),
    ("deeplabv3_mobilenet_v3_large", "segmentation"),
    ("quantized_mobilenet_v2", "quantized (int8)"),  # the message names mobilenet_v2
    ("r3d_18", "video"),
])  # fmt: skip
def test_non_classifiers_are_refused_before_anything_is_built(name, kind, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for origin in Origin:
        message = f"torchvision:{name} is not a float image classifier (it is a {kind} model)"
        with pytest.raises(ValueError, match=re.escape(message)):
            make_builder(f"torchvision:{name}", {}, origin)()
    assert not (tmp_path / "torch-home").exists()  # nothing tried to download


@pytest.mark.parametrize("kwargs", [{"weights": "DEFAULT"}, {"weights_backbone": "X"},
                                    {"progress": True}])  # fmt: skip
def test_arguments_that_download_are_refused_from_every_origin(kwargs):
    for origin in Origin:
        with pytest.raises(ValueError, match="qretrain never downloads weights"):
            make_builder("torchvision:resnet18", kwargs, origin)()


def test_class_count_mismatch_names_the_flag_to_give(own_weights):
    with pytest.raises(ValueError, match=r"its classifier has 10 outputs: pass --num-classes 10"):
        load_model("torchvision:mobilenet_v3_small", own_weights)


def test_a_guessed_contract_is_named_in_a_warning(own_weights, caplog):
    with caplog.at_level(logging.WARNING):
        model = load_model("torchvision:mobilenet_v3_small", own_weights, num_classes=10)
    assert (
        "input size/mean/std/resize not stated; using the transforms torchvision "
        "documents for its ImageNet weights" in caplog.text
    )
    assert "3x224x224 (centre crop of 256, bilinear), mean (0.485, 0.456, 0.406)" in caplog.text
    assert get_arch(model).contract.size == 224
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_model("torchvision:mobilenet_v3_small", own_weights, num_classes=10,
                   contract={**FACTS, "resize": None})  # fmt: skip
    assert caplog.text == ""  # every fact stated: nothing guessed


def test_stated_facts_are_kept_in_the_file_which_reopens_untrusted(own_weights, tmp_path):
    model = load_model("torchvision:mobilenet_v3_small", own_weights, num_classes=10,
                       contract=FACTS)  # fmt: skip
    arch = get_arch(model)
    assert (arch.contract.size, arch.contract.std, arch.contract.resize) == (64, (0.25,) * 3, 73)
    qretrain.save(model, tmp_path / "m.h5")
    same = qretrain.load(tmp_path / "m.h5")  # no trust_code: a known architecture
    assert get_arch(same) == arch
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(same(x), model(x))


def test_the_cli_takes_the_facts_and_the_companion_inherits_them(own_weights, tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("rules:\n  - {type: Linear, k: 16}\n")
    out = tmp_path / "c.h5"
    assert main(["compress", "torchvision:mobilenet_v3_small", "--weights", str(own_weights),
                 "--num-classes", "10", "--input-size", "64", "--mean", "0.5", "--std",
                 "0.25,0.25,0.25", "--resize", "none", "--plan", str(plan), "-o", str(out),
                 "--quiet"]) == 0  # fmt: skip
    contract = get_arch(qretrain.load(out)).contract
    assert (contract.size, contract.mean, contract.resize) == (64, (0.5,) * 3, None)
    assert main(["inspect", str(out)]) == 0  # reopens with no --trust-code
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        torchvision.transforms.functional.to_pil_image(torch.rand(3, 80, 96)).save(
            images / f"{i}.png"
        )
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(images), "--reference",
                 "torchvision:mobilenet_v3_small", "--reference-weights", str(own_weights),
                 "--json"]) == 0  # fmt: skip
    assert '"agreement"' in capsys.readouterr().out


def test_safetensors_weights_load(tmp_path, own_weights):
    from safetensors.torch import save_file

    state = torch.load(own_weights, weights_only=True)
    save_file(state, tmp_path / "mine.safetensors")
    model = load_model("torchvision:mobilenet_v3_small", tmp_path / "mine.safetensors",
                       num_classes=10, contract=FACTS)  # fmt: skip
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match="cannot read .* as a safetensors file"):
        load_model("torchvision:mobilenet_v3_small", tmp_path / "bad.safetensors")


def test_a_file_states_its_own_facts(tmp_path, tiny_vgg):
    qretrain.save(tiny_vgg, tmp_path / "m.h5")
    with pytest.raises(ValueError, match="is a model file, which states its own"):
        load_model(tmp_path / "m.h5", contract=FACTS)


def test_bad_builder_arguments_from_a_config_are_one_line(tmp_path, capsys):
    import yaml

    config = {"output": str(tmp_path / "run"), "model": "qretrain.zoo:vgg_small",
              "model_args": {"width": "wide"}, "plan": {"file": "x.yaml"},
              "data": {"evaluate": "d.npz"}}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "run.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be built with {'width': 'wide'} (TypeError" in err
    assert not (tmp_path / "run").exists()
