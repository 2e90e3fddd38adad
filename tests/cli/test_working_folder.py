"""A stranger's folder: modules planted where qretrain runs are never imported.

Users run qretrain inside downloaded model folders. Every command runs here in a
fresh process whose working folder holds modules named like the packages qretrain
imports (each leaves a marker file when imported); none may run. A ``module:callable``
the user types is still found in the working folder, for that import only.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import qretrain
from qretrain.testing.ranks import torchrun_qretrain

PLANTED = ("onnx", "h5py", "efficientnet_lite_pytorch", "torchvision", "torch", "numpy",
           "yaml", "safetensors", "PIL", "matplotlib")  # fmt: skip


def plant(folder: Path) -> None:
    for name in PLANTED:
        (folder / f"{name}.py").write_text(
            f"open({str(folder / ('RAN-' + name))!r}, 'w').close()\n"
            "raise SystemExit('planted module imported')\n"
        )


def ran(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("RAN-*"))


@pytest.fixture
def stranger(tmp_path):
    """A folder of inputs (tiny model files, images, a run config) with planted modules."""
    folder = tmp_path / "downloaded"
    folder.mkdir()
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16)
    qretrain.save(model, folder / "m.h5")
    rng = np.random.default_rng(0)
    np.savez(folder / "d.npz", x=rng.integers(0, 256, (48, 28, 28), dtype=np.uint8),
             y=rng.integers(0, 10, 48))  # fmt: skip
    (folder / "plan.yaml").write_text("rules:\n  - {type: Conv2d, k: 4}\n")
    (folder / "run.yaml").write_text(yaml.safe_dump({
        "output": "run", "model": "m.h5",
        "data": {"retrain": {"spec": "d.npz", "limit": 32}, "evaluate": {"spec": "d.npz", "limit": 16}},
        "plan": {"file": "plan.yaml"}, "retrain": {"epochs": 1, "conventional": False},
    }))  # fmt: skip
    plant(folder)
    return folder


COMMANDS = [
    ["inspect", "m.h5"],
    ["inspect", "efficientnet-lite0"],
    ["inspect", "torchvision:resnet18"],
    ["analyze", "m.h5", "--data", "d.npz", "--limit", "16", "--ks", "2,4", "--select", "1-2",
     "-o", "sweep"],
    ["plan", "sweep", "--max-drop", "50", "--metric", "agreement", "-o", "auto.yaml", "--no-verify"],
    ["compress", "m.h5", "--plan", "plan.yaml", "-o", "c.h5"],
    ["evaluate", "c.h5", "--data", "d.npz", "--reference", "m.h5"],
    ["export", "c.h5", "--format", "onnx", "-o", "c.onnx"],
    ["export", "c.h5", "--format", "safetensors", "-o", "c.safetensors"],
    ["retrain", "c.h5", "--teacher", "m.h5", "--data", "d.npz", "--epochs", "1", "-o", "r.h5"],
    ["run", "run.yaml"],
    ["report", "run"],
]  # fmt: skip


def test_no_command_imports_a_module_planted_in_the_working_folder(stranger, tmp_path):
    # A driver outside the folder calls main() as the console script does: the
    # script's own folder, not the working folder, is first on sys.path.
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(f"""
        import sys
        from qretrain.cli.main import main
        codes = [main(argv) for argv in {COMMANDS!r}]
        print("CODES", codes)
    """)
    )
    result = subprocess.run([sys.executable, str(driver)], cwd=stranger, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert ran(stranger) == [], result.stderr[-2000:]
    assert "CODES [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]" in result.stdout, result.stderr[-3000:]
    assert (stranger / "c.onnx").is_file() and (stranger / "run" / "report.md").is_file()


@pytest.mark.parametrize("entry", ["module", "script"])
def test_entry_points_skip_the_working_folder(stranger, entry):
    command = ([sys.executable, "-m", "qretrain"] if entry == "module"
               else [str(Path(sys.executable).with_name("qretrain"))])  # fmt: skip
    result = subprocess.run([*command, "export", "m.h5", "--format", "onnx", "-o", "m.onnx"],
                            cwd=stranger, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ran(stranger) == [] and result.returncode == 0, result.stderr[-2000:]


def test_torchrun_without_python_skips_the_working_folder(stranger):
    """``torchrun -m qretrain`` would import a planted ``qretrain.py`` (Python resolves
    ``-m`` from the working folder first); ``torchrun --no-python qretrain``, as the docs
    give it, runs the console script, which does not."""
    (stranger / "qretrain.py").write_text(
        f"open({str(stranger / 'RAN-qretrain')!r}, 'w').close()\n"
        "raise SystemExit('planted module imported')\n"
    )
    torchrun_qretrain(["export", "m.h5", "--format", "onnx", "-o", "m.onnx"], processes=1,
                      cwd=stranger)  # fmt: skip
    assert ran(stranger) == [] and (stranger / "m.onnx").is_file()


def test_a_typed_spec_is_imported_from_the_working_folder_for_that_import_only(stranger):
    (stranger / "mynet.py").write_text(
        textwrap.dedent("""
        from torch import nn
        import qretrain
        def build():
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        build.contract = qretrain.InputContract(1, 28, (0.5,), (0.5,))
    """)
    )
    result = subprocess.run(
        [str(Path(sys.executable).with_name("qretrain")), "export", "mynet:build", "--format",
         "onnx", "-o", "mynet.onnx"], cwd=stranger, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mynet:build: imported mynet from the working folder" in result.stderr
    assert ran(stranger) == []  # onnx, imported later, is the real one
