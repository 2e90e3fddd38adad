import json
import subprocess
import sys
from pathlib import Path

import pytest

import qretrain
from qretrain.cli.main import main

TINY = "qretrain.zoo:vgg_small"


@pytest.fixture
def tiny_weights(tmp_path, tiny_vgg):
    """The zoo's default-width VGG, so that the spec builds it without arguments."""
    import torch

    torch.manual_seed(0)
    model = qretrain.build_model(TINY)
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def plan_file(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("rules:\n  - {layers: 5-6, k: 16}\n  - {kinds: [bias], k: 1}\n")
    return path


def test_inspect_table(capsys):
    assert main(["inspect", "qretrain.zoo:resnet_small"]) == 0
    out = capsys.readouterr().out
    assert "layer3.1.conv2" in out and "BatchNorm2d" in out
    assert "16 conv/linear layers (numbered in forward order), 174,970 parameters" in out


def test_inspect_json_counts_match_the_model(capsys):
    assert main(["inspect", "torchvision:vgg16", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layers"] == 16 and data["parameters"] == 138_357_544
    fc6 = next(m for m in data["modules"] if m["layer"] == 14)
    assert fc6["name"] == "classifier.0" and fc6["weight_shape"] == [4096, 25088]


def test_compress_writes_model_and_json_report(tmp_path, tiny_weights, plan_file, capsys):
    out = tmp_path / "small.h5"
    argv = ["compress", TINY, "--weights", str(tiny_weights), "--plan", str(plan_file),
            "-o", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["file_bytes"] == out.stat().st_size
    assert f"{record['reduction']:.2%} smaller" in printed
    assert record["report"]["clustered_tensors"] == 2 + 7
    model = qretrain.load(out)
    assert model.classifier[1].weight.unique().numel() <= 16
    # The loaded file is itself a MODEL for inspect.
    assert main(["inspect", str(out)]) == 0
    assert "weight:16" in capsys.readouterr().out


def test_compress_paper_layout_and_method_override(tmp_path, tiny_weights, plan_file):
    out = tmp_path / "paper.h5"
    argv = ["compress", TINY, "--weights", str(tiny_weights), "--plan", str(plan_file),
            "-o", str(out), "--layout", "paper", "--method", "linear", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["layout"] == "paper" and record["plan"]["method"] == "linear"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "resnet"], "unknown model spec 'resnet'"),
        (["compress", TINY, "--plan", "missing.yaml", "-o", "x.h5"], "plan file 'missing.yaml' does not exist"),
        (["compress", TINY, "--plan", "{plan}", "-o", "x.txt"], "must end in .h5"),
        (["compress", TINY, "--plan", "{plan}", "--signal", "fisher", "-o", "x.h5"],
         "--signal: for the recipe (--target or --max-drop), not --plan"),
        (["compress", TINY, "--plan", "{plan}", "--no-channel-scales", "-o", "x.h5"],
         "--no-channel-scales: for the recipe (--target or --max-drop), not --plan"),
        (["inspect", "{dir}/nothing.h5"], "does not exist"),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_exit_2(tmp_path, plan_file, capsys, argv, message):
    argv = [a.format(plan=plan_file, dir=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.startswith(f"qretrain {argv[0]}: error:")


def test_plan_errors_list_every_problem(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {layers: 99, k: 4}\n  - {name: nope, k: 4}\n")
    out = tmp_path / "x.h5"
    assert main(["compress", TINY, "--plan", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "rule 1 (layers='99'" in err and "rule 2 (name='nope'" in err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "qretrain.cli.main", "compress", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "qretrain compress torchvision:vgg16 --plan" in result.stdout
    script_path = Path(sys.executable).parent / "qretrain"  # beside the interpreter
    script = subprocess.run([str(script_path), "--version"], capture_output=True, text=True)
    assert script.returncode == 0 and qretrain.__version__ in script.stdout
