"""The own-model journey through the CLI, as a new user takes it: a torchvision
architecture with their class count, input size and normalisation, their weights
file and a folder of PNGs; one command, no YAML, no --trust-code."""

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import qretrain
from qretrain.cli.main import main

FACTS = ["--num-classes", "10", "--input-size", "64", "--mean", "0.5", "--std", "0.25",
         "--resize", "none"]  # fmt: skip


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(num_classes=10).state_dict(), folder / "mine.pth")
    pngs = folder / "pngs"
    pngs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(100):
        image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)  # any size: fitted to 64 px
        Image.fromarray(image).save(pngs / f"{i:03d}.png")
    return folder


def test_one_command_with_the_users_facts(user, monkeypatch, capsys):
    monkeypatch.chdir(user)
    argv = ["compress", "torchvision:squeezenet1_1", "--weights", "mine.pth", *FACTS,
            "--data", "pngs", "--target", "4x", "-o", "small.h5"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "\r" not in printed.err and "[retrain (blocks)]" in printed.err
    model = qretrain.load(user / "small.h5")  # reopens without trust_code
    arch = qretrain.models.get_arch(model)
    assert arch.kwargs == {"num_classes": 10}
    assert (arch.contract.size, arch.contract.mean, arch.contract.std, arch.contract.resize) == \
        (64, (0.5,) * 3, (0.25,) * 3, None)  # fmt: skip
    record = json.loads((user / "small.json").read_text())
    assert record["ratio"] >= 4
    guard = record["quality"]
    kept = guard["retrained" if record["kept"] == "retrained" else "clustered"]
    assert kept["kl"] <= guard["clustered"]["kl"]  # never worse than the clustered start
    assert main(["inspect", "small.h5"]) == 0


def test_a_one_image_folder_is_refused(user, tmp_path, capsys):
    (tmp_path / "one").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "one" / "x.png")
    code = main(["compress", "torchvision:squeezenet1_1", "--weights", str(user / "mine.pth"),
                 *FACTS, "--data", str(tmp_path / "one"), "--target", "4x", "-o",
                 str(tmp_path / "o.h5"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "too few to retrain" in err
    assert not (tmp_path / "o.h5").exists()
