import json

import numpy as np
import torch

import qretrain
from qretrain.cli.main import main


def test_evaluate_accuracy_and_agreement_on_a_file_dataset(tmp_path, capsys):
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16)
    qretrain.save(model, tmp_path / "m.h5")
    x = np.random.default_rng(0).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12) % 10)
    argv = ["evaluate", str(tmp_path / "m.h5"), "--data", str(tmp_path / "d.npz"),
            "--reference", str(tmp_path / "m.h5"), "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 12 and result["agreement"] == 1.0 and result["kl"] == 0.0
    assert 0 <= result["top1"] <= result["top5"] <= 1


def test_evaluate_missing_dataset_is_one_line(capsys):
    assert main(["evaluate", "qretrain.zoo:vgg_small", "--data", "no-such-set"]) == 2
    err = capsys.readouterr().err
    assert "no dataset 'no-such-set'" in err and "Traceback" not in err


def test_efficientnet_lite0_top1_on_foolbox_imagenet(capsys):
    """The acceptance figure: 17 of the 20 labeled ImageNet images."""
    assert main(["evaluate", "efficientnet-lite0", "--data", "foolbox-imagenet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 20 and round(result["top1"] * 20) == 17


def test_clustered_efficientnet_keeps_its_predictions_through_a_file(tmp_path):
    model = qretrain.load_model("efficientnet-lite0")
    qretrain.cluster_(model, "examples/plans/efficientnet-lite0-mixed.yaml")
    data = qretrain.load_dataset("foolbox-imagenet", qretrain.models.get_arch(model).contract,
                                 limit=8)  # fmt: skip
    before, _ = qretrain.metrics.predict(model, data)
    qretrain.save(model, tmp_path / "lite0.h5")
    after, _ = qretrain.metrics.predict(qretrain.load(tmp_path / "lite0.h5"), data)
    # Batch norm is stored folded: the same function up to float rounding.
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert torch.equal(after.argmax(1), before.argmax(1))
    qretrain.save(model, tmp_path / "kept.h5", fold_batchnorm=False)
    exact, _ = qretrain.metrics.predict(qretrain.load(tmp_path / "kept.h5"), data)
    assert torch.equal(before, exact)


def test_evaluate_on_two_sets_joined_by_plus(tmp_path, capsys):
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16)
    qretrain.save(model, tmp_path / "m.h5")
    rng = np.random.default_rng(0)
    for name, n in (("a", 12), ("b", 5)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        np.savez(tmp_path / f"{name}.npz", x=x, y=np.arange(n) % 10)
    data = f"{tmp_path / 'a.npz'}+{tmp_path / 'b.npz'}"
    assert main(["evaluate", str(tmp_path / "m.h5"), "--data", data, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (
        result["images"] == 17
        and result["data"] == "a.npz: 12 images, labeled + b.npz: 5 images, labeled"
    )
    assert main(["evaluate", str(tmp_path / "m.h5"), "--data", data, "--limit", "7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 7
    assert main(["evaluate", str(tmp_path / "m.h5"), "--data", f"{tmp_path / 'a.npz'}+"]) == 2
    assert "an empty part; join specs as A+B" in capsys.readouterr().err
