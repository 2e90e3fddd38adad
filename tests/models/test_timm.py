"""timm architectures: timm:NAME specs, contracts from pretrained_cfg, local weights only."""

import pytest
import torch

import qretrain
from qretrain.cli.main import main
from qretrain.models import Origin, get_arch, load_model
from qretrain.models.specs import make_builder

timm = pytest.importorskip("timm")
SPEC = "timm:mobilenetv3_small_100"


def test_contract_comes_from_pretrained_cfg():
    model = qretrain.build_model(SPEC, num_classes=10)
    contract = get_arch(model).contract
    cfg = timm.models.get_pretrained_cfg("mobilenetv3_small_100")
    assert (contract.size, contract.mean, contract.interpolation) == (
        224,
        tuple(cfg.mean),
        "bicubic",
    )
    assert contract.resize == round(224 / cfg.crop_pct)
    assert model.classifier.out_features == 10


@pytest.mark.parametrize("kwargs", [{"pretrained": True}, {"checkpoint_path": "x.pth"},
                                    {"pretrained_cfg_overlay": {"file": "x"}}])  # fmt: skip
def test_nothing_is_fetched_or_read_by_name(kwargs):
    for origin in Origin:
        with pytest.raises(ValueError, match="qretrain never downloads weights"):
            make_builder(SPEC, kwargs, origin)()


def test_unknown_timm_model_suggests_names():
    with pytest.raises(ValueError, match=r"timm has no model 'mobilenetv3_smal'; similar: "):
        load_model("timm:mobilenetv3_smal")


def test_weights_from_safetensors_and_the_file_reopens_untrusted(tmp_path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = timm.create_model("mobilenetv3_small_100", num_classes=10).state_dict()
    save_file(weights, tmp_path / "w.safetensors")
    plan = tmp_path / "plan.yaml"
    plan.write_text("rules:\n  - {type: Conv2d, k: 16}\n  - {type: Linear, k: 16}\n")
    out = tmp_path / "m.h5"
    assert main(["compress", SPEC, "--weights", str(tmp_path / "w.safetensors"), "--num-classes",
                 "10", "--plan", str(plan), "-o", str(out), "--quiet"]) == 0  # fmt: skip
    assert main(["inspect", str(out)]) == 0  # no --trust-code: timm:NAME is an architecture
    reopened = qretrain.load(out)
    assert get_arch(reopened).spec == SPEC and get_arch(reopened).kwargs == {"num_classes": 10}


def test_one_command_on_a_timm_model_and_its_weights(tmp_path, capsys):
    """`qretrain compress timm:NAME --weights W.safetensors --data FOLDER --target 7x`."""
    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(timm.create_model("mobilenetv3_small_100", num_classes=10).state_dict(),
              tmp_path / "w.safetensors")  # fmt: skip
    (tmp_path / "pngs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(100):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            tmp_path / "pngs" / f"{i}.png")  # fmt: skip
    out = tmp_path / "m.h5"
    # 32 px keeps the test quick; the facts are the user's to state, timm's otherwise
    assert main(["compress", SPEC, "--weights", str(tmp_path / "w.safetensors"), "--num-classes",
                 "10", "--input-size", "32", "--data", str(tmp_path / "pngs"), "--target", "7x",
                 "-o", str(out), "--quiet"]) == 0  # fmt: skip
    assert "x smaller than float32" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0  # no --trust-code
    contract = get_arch(qretrain.load(out)).contract
    cfg = timm.models.get_pretrained_cfg("mobilenetv3_small_100")
    assert (contract.size, contract.mean, contract.interpolation) == (
        32,
        tuple(cfg.mean),
        "bicubic",
    )
