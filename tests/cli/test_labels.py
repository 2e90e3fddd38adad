"""Labels outside the model's classes: one line, never a silently missing top-1."""

import numpy as np
import pytest

from qretrain.cli.main import main


@pytest.mark.parametrize("label", [-5, 1000])
def test_evaluate_and_retrain_refuse_labels_the_model_has_no_class_for(retrain_files, capsys,
                                                                       label):  # fmt: skip
    folder = retrain_files(32)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 32)
    labels[7] = label
    np.savez(folder / "bad.npz", x=rng.integers(0, 256, (32, 28, 28), dtype=np.uint8), y=labels)
    expected = (
        f"must be classes 0 to 9 of the model (or -1 for none); image 7 has {label}: "
        "fix the labels, or use data made for this model"
    )
    assert main(["evaluate", str(folder / "student.h5"), "--data", str(folder / "bad.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    out = folder / "r.h5"
    assert (
        main(
            [
                "retrain",
                str(folder / "student.h5"),
                "--labels",
                "--data",
                str(folder / "bad.npz"),
                "-o",
                str(out),
                "--epochs",
                "1",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "labels of the retraining data " + expected in err, err
    assert not out.exists()
