"""Bad input on the command line: one clear line on stderr, exit code 2, nothing written."""

import json

import numpy as np
import pytest
import torch

import qretrain
from qretrain.cli.main import main
from qretrain.data import load_dataset


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


@pytest.fixture
def files(retrain_files):
    folder = retrain_files()
    (folder / "plan.yaml").write_text("rules:\n  - {type: Linear, k: 4}\n")
    return folder


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("output,message", [
    ("missing/x.h5", "folder '.*missing' does not exist; create it first"),
    ("plan.yaml/x.h5", "folder '.*plan.yaml' does not exist"),
    ("/proc/x.h5", "folder '/proc' takes no new files"),
])  # fmt: skip
def test_unwritable_output_is_refused_before_the_work(files, capsys, output, message):
    out = output if output.startswith("/") else files / output
    code, err = run(["compress", files / "teacher.h5", "--plan", files / "plan.yaml", "-o", out],
                    capsys)  # fmt: skip
    assert code == 2 and one_line(err)
    assert __import__("re").search(message, err), err
    code, err = run(["retrain", files / "student.h5", "--teacher", files / "teacher.h5",
                     "--data", files / "d.npz", "-o", out], capsys)  # fmt: skip
    assert code == 2 and one_line(err), err


@pytest.mark.parametrize("device,message", [
    ("cuda", "has no CUDA device; use --device cpu"),
    ("tpu", "device must be cpu, cuda or cuda:N; got 'tpu'"),
    ("cuda:x", "device must be cpu, cuda or cuda:N"),
])  # fmt: skip
def test_bad_device_is_one_line(files, capsys, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    for argv in (["evaluate", files / "teacher.h5", "--data", files / "d.npz"],
                 ["retrain", files / "student.h5", "--teacher", files / "teacher.h5",
                  "--data", files / "d.npz", "-o", files / "r.h5"]):  # fmt: skip
        code, err = run([*argv, "--device", device], capsys)
        assert code == 2 and one_line(err) and message in err, err
    assert not (files / "r.h5").exists()


def test_a_truncated_jpeg_is_skipped_and_counted(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.jpg"
        )
    data = (tmp_path / "1.jpg").read_bytes()
    (tmp_path / "1.jpg").write_bytes(data[: len(data) // 2])
    ds = load_dataset(str(tmp_path), None)
    assert len(ds) == 2 and ds.skipped == 1
    assert "1 unreadable skipped" in ds.describe()
    torch.manual_seed(0)
    qretrain.save(qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=8),
                  tmp_path / "m.h5")  # fmt: skip
    code = main(["evaluate", str(tmp_path / "m.h5"), "--data", str(tmp_path), "--reference",
                 str(tmp_path / "m.h5"), "--json"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["agreement"] == 1.0


def test_images_with_nan_are_refused(tmp_path, capsys):
    x = np.random.default_rng(0).random((4, 28, 28)).astype(np.float32)
    x[2, 3, 4] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    torch.manual_seed(0)
    qretrain.save(qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=8),
                  tmp_path / "m.h5")  # fmt: skip
    code, err = run(["evaluate", tmp_path / "m.h5", "--data", tmp_path / "nan.npz",
                     "--reference", tmp_path / "m.h5", "--json"], capsys)  # fmt: skip
    assert code == 2 and one_line(err)
    assert "holds 1 non-finite pixel values (NaN or infinite)" in err


def test_save_refuses_a_model_it_could_never_load(tmp_path):
    with pytest.raises(ValueError, match="would not rebuild it, so the file could never be loaded"):
        qretrain.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), tmp_path / "m.h5")
    assert not any(tmp_path.iterdir())


def test_teacher_settings_are_checked_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path / "cache"))
    code, err = run(["teacher", "vgg", "--epochs", "-1"], capsys)
    assert code == 2 and one_line(err) and "epochs must be an int >= 1; got -1" in err
    code, err = run(["inspect", "teacher:alexnet"], capsys)
    assert code == 2 and "unknown teacher 'alexnet'; known: vgg, resnet" in err
    assert not (tmp_path / "cache").exists()


def test_a_record_never_trains_a_teacher(tmp_path, monkeypatch):
    monkeypatch.setenv("QRETRAIN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(
        ValueError,
        match="not trained on this machine; train it once with "
        "`qretrain teacher vgg --epochs 15 --seed 0`",
    ):
        qretrain.load_model("teacher:vgg", origin=qretrain.models.Origin.RECORD)


def test_a_model_that_outputs_nan_still_prints_valid_json(tmp_path, capsys):
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=8)
    with torch.no_grad():
        model.classifier[7].bias.fill_(float("nan"))
    qretrain.save(model, tmp_path / "nan.h5")  # well-formed: NaN is a float32 value
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 28, 28), np.uint8), y=np.zeros(4, np.int64))
    code = main(["evaluate", str(tmp_path / "nan.h5"), "--data", str(tmp_path / "d.npz"),
                 "--reference", str(tmp_path / "nan.h5"), "--json"])  # fmt: skip
    result = json.loads(capsys.readouterr().out)  # strict JSON: no NaN literal
    assert code == 0 and result["kl"] is None


@pytest.mark.parametrize("bug", [TypeError("a bug"), ValueError("a bug"), KeyError("a bug")])
def test_a_bug_is_no_user_error_and_keeps_its_traceback(monkeypatch, bug):
    from qretrain.cli import inspect_cmd

    def broken(args):
        raise bug

    monkeypatch.setattr(inspect_cmd, "run", broken)
    with pytest.raises(type(bug)):
        main(["inspect", "qretrain.zoo:vgg_small"])
