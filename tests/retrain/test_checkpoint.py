"""A retraining checkpoint is checked against the run before anything in it is used."""

import pytest
import torch

from qretrain.cli.main import main


def _tamper(payload: dict, how: str) -> str:
    """Change ``payload`` as ``how`` says; return the message the resume must print."""
    name, value = next(iter(payload["params"].items()))
    if how == "epoch x":
        payload["epoch"] = "x"
        return "epoch is 'x'; expected an int from 1 to the run's 2 epochs"
    if how == "epoch -3":
        payload["epoch"] = -3
        return "epoch is -3; expected an int from 1 to the run's 2 epochs"
    if how == "broadcast":  # copy_ would spread one row over the whole tensor
        payload["params"][name] = value[0].clone()
        return (
            f"params {name!r} is torch.float32 {tuple(value[0].shape)}; expected "
            f"torch.float32 {tuple(value.shape)}"
        )
    if how == "nan":
        payload["params"][name] = torch.full_like(value, float("nan"))
        return f"params {name!r} holds NaN or infinite values"
    if how == "history":
        payload["history"] = payload["history"][:1]
        return "history must list 2 epochs"
    if how == "best":
        payload["best"] = {"epoch": 9, "score": 1.0, "state": {}}
        return "best must be None or {epoch, score, state} of an epoch run"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["epoch x", "epoch -3", "broadcast", "nan", "history", "best"])
def test_a_crafted_checkpoint_is_refused_with_one_line(retrain_files, capsys, how):
    tmp_path = retrain_files(32)
    out = tmp_path / "r.h5"
    argv = ["retrain", str(tmp_path / "student.h5"), "--teacher", str(tmp_path / "teacher.h5"),
            "--data", str(tmp_path / "d.npz"), "-o", str(out), "--epochs", "2", "--quiet",
            "--val-data", str(tmp_path / "d.npz"), "--val-limit", "8"]  # fmt: skip
    assert main([*argv, "--keep-checkpoint"]) == 0
    ckpt = out.with_suffix(".ckpt")
    payload = torch.load(ckpt, weights_only=True)
    message = _tamper(payload, how)
    torch.save(payload, ckpt)
    before = out.read_bytes()
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert f"checkpoint {str(ckpt)!r} is not one this run can resume" in err
    assert err.rstrip().endswith("remove it to start fresh")
    assert out.read_bytes() == before  # nothing written
