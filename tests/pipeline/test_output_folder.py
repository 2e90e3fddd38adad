"""`qretrain run` writes only into its own folder, and never mixes two runs there."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import qretrain
from qretrain.cli.main import main
from qretrain.pipeline import run as run_module
from qretrain.storage.atomic import LOCK_NAME


@pytest.fixture
def quick_run(tmp_path):
    """A config with a plan file and no sweep or retraining: plan, compress, evaluate."""
    torch.manual_seed(0)
    qretrain.save(qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16),
                  tmp_path / "m.h5")  # fmt: skip
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (32, 28, 28), dtype=np.uint8),
             y=rng.integers(0, 10, 32))  # fmt: skip
    (tmp_path / "plan.yaml").write_text("rules:\n  - type: Conv2d\n    k: 4\n")
    config = {
        "output": str(tmp_path / "run"),
        "model": str(tmp_path / "m.h5"),
        "data": {"evaluate": str(tmp_path / "d.npz")},
        "plan": {"file": str(tmp_path / "plan.yaml")},
    }

    def write(**changes) -> tuple[Path, Path]:
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump({**config, **changes}))
        return path, Path({**config, **changes}["output"])

    return write


def _one_line_error(capsys, *parts: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for part in parts:
        assert part in err, err
    return err


def test_a_folder_holding_files_no_run_wrote_is_refused_unless_overwrite(quick_run, capsys):
    path, out = quick_run()
    out.mkdir()
    planted = {"report.md": "my notes\n", "plan.yaml": "mine: true\n", "original.h5": "123456789"}
    for name, text in planted.items():
        (out / name).write_text(text)
    assert main(["run", str(path), "--quiet"]) == 2
    _one_line_error(capsys, f"output folder {str(out)!r} holds files qretrain run did not write "
                    "(original.h5, plan.yaml, report.md)", "--overwrite")  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(planted)  # nothing written
    assert all((out / n).read_text() == t for n, t in planted.items())
    assert main(["run", str(path), "--quiet", "--overwrite"]) == 0
    original = json.loads((out / "evaluate.json").read_text())["models"]["original"]
    # The original model's size is its own file's, not that of the 9 bytes found there.
    assert original["file_bytes"] == (out / "original.h5").stat().st_size > 1000
    assert "my notes" not in (out / "report.md").read_text()
    # The folder is now a run's: a rerun is welcome, and skips what is done.
    assert main(["run", str(path)]) == 0
    assert "[compress] done before" in capsys.readouterr().err


def test_an_empty_folder_is_taken_and_a_refused_config_leaves_nothing(quick_run, capsys):
    path, out = quick_run(model_args={"weights": "x.pth"})
    assert main(["run", str(path), "--quiet"]) == 2
    _one_line_error(capsys, "model_args: 'weights' is not a builder argument; name a state dict "
                    "with the top-level key 'weights: FILE.pth'")  # fmt: skip
    assert not out.exists()
    # A config that passes its checks but names a model that cannot load: no folder,
    # no config.yaml, no lock left behind.
    path, out = quick_run(model="subprocess:run")
    assert main(["run", str(path), "--quiet"]) == 2
    _one_line_error(capsys, "subprocess:run", "--trust-code")
    assert not out.exists()
    out.mkdir()  # an empty folder is anyone's to take
    path, out = quick_run()
    assert main(["run", str(path), "--quiet"]) == 0
    assert (out / "run.json").is_file() and not (out / LOCK_NAME).exists()


def test_a_rerun_with_other_random_weights_is_refused_not_mixed(quick_run, capsys, monkeypatch):
    """A builder with random weights, killed after the plan stage: the rerun builds
    another model, and must not compress it under the first one's records."""
    path, out = quick_run(model="qretrain.zoo:vgg_small", model_args={"width": 4, "hidden": 16})
    real = run_module.cluster_stage

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "cluster_stage", killed)
    assert main(["run", str(path), "--quiet"]) == 130
    assert (out / "plan.json").exists() and not (out / "compress.json").exists()
    monkeypatch.setattr(run_module, "cluster_stage", real)
    capsys.readouterr()
    assert main(["run", str(path), "--quiet"]) == 2
    _one_line_error(capsys, f"{str(out)!r} holds a run of qretrain.zoo:vgg_small with other "
                    "weights (fingerprint", "--overwrite")  # fmt: skip
    assert not (out / "compress.json").exists()
    assert main(["run", str(path), "--quiet", "--overwrite"]) == 0  # starts over, whole
    assert json.loads((out / "compress.json").read_text())["file_sha256"] == \
        qretrain.storage.file_sha256(out / "clustered.h5")  # fmt: skip


def test_a_seeded_random_model_resumes(quick_run, monkeypatch):
    path, out = quick_run(model="qretrain.zoo:vgg_small", model_args={"width": 4, "hidden": 16})
    monkeypatch.setattr(run_module, "cluster_stage", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt))  # fmt: skip
    torch.manual_seed(3)
    assert main(["run", str(path), "--quiet"]) == 130
    monkeypatch.undo()
    torch.manual_seed(3)  # the same weights again: the same run, resumed
    assert main(["run", str(path), "--quiet"]) == 0
    assert (out / "compress.json").exists()


def test_the_run_lock_never_writes_through_a_link(quick_run, tmp_path, capsys):
    path, out = quick_run()
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.symlink(victim, out / LOCK_NAME)
    assert main(["run", str(path), "--quiet"]) == 2
    _one_line_error(capsys, f"{str(out / LOCK_NAME)!r} is a symbolic link: qretrain never "
                    "writes through links")  # fmt: skip
    assert victim.read_text() == "precious\n"
