import json

import qretrain
from qretrain.cli.main import main


def test_retrain_cli_label_free_then_conventional(retrain_files, capsys):
    tmp_path = retrain_files(64)
    out = tmp_path / "free.h5"
    argv = ["retrain", str(tmp_path / "student.h5"), "--teacher", str(tmp_path / "teacher.h5"),
            "--data", str(tmp_path / "d.npz"), "-o", str(out), "--epochs", "2", "--quiet",
            "--val-data", str(tmp_path / "d.npz"), "--val-limit", "16"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["config"]["loss"] == "kl" and len(record["history"]) == 2
    assert record["file_bytes"] == out.stat().st_size and "guard" in record
    assert not out.with_suffix(".ckpt").exists()  # removed once the run succeeded
    model = qretrain.load(out)
    assert model.features[0].weight.unique().numel() <= 4
    labels = tmp_path / "labels.h5"
    argv = ["retrain", str(tmp_path / "student.h5"), "--labels", "--data",
            str(tmp_path / "d.npz"), "-o", str(labels), "--epochs", "1", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(labels.with_suffix(".json").read_text())["config"]["loss"] == "ce"
    capsys.readouterr()
    assert main(["retrain", str(tmp_path / "student.h5"), "--data", "mnist", "-o", "x.h5"]) == 2
    assert "needs --teacher" in capsys.readouterr().err


def test_output_to_a_file_gets_one_line_per_epoch_and_quiet_gets_none(retrain_files, capsys):
    tmp_path = retrain_files(64)
    argv = [
        "retrain",
        str(tmp_path / "student.h5"),
        "--teacher",
        str(tmp_path / "teacher.h5"),
        "--data",
        str(tmp_path / "d.npz"),
        "-o",
        str(tmp_path / "r.h5"),
        "--epochs",
        "2",
    ]
    assert main(argv) == 0  # stderr is captured: not a terminal, so no bars
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("epoch 1: loss") == 1 and "epoch 2: loss" in err
    assert main([*argv, "--quiet"]) == 0  # --quiet after the subcommand
    assert "epoch" not in capsys.readouterr().err
    assert main([*argv, "-v"]) == 0 and main(["-v", *argv]) == 0  # -v on either side
    assert "epoch 2: loss" in capsys.readouterr().err


def test_resume_without_a_checkpoint_says_it_starts_fresh(retrain_files, capsys):
    tmp_path = retrain_files(32)
    argv = ["retrain", str(tmp_path / "student.h5"), "--teacher", str(tmp_path / "teacher.h5"),
            "--data", str(tmp_path / "d.npz"), "-o", str(tmp_path / "r.h5"), "--epochs", "1",
            "--resume"]  # fmt: skip
    assert main(argv) == 0
    assert "--resume: no checkpoint at" in capsys.readouterr().err


def test_retrain_cli_block_wise_on_augmented_views(retrain_files, capsys):
    tmp_path = retrain_files(32)
    out = tmp_path / "blocks.h5"
    argv = ["retrain", str(tmp_path / "student.h5"), "--teacher", str(tmp_path / "teacher.h5"),
            "--data", str(tmp_path / "d.npz"), "--views", "48", "-o", str(out), "--quiet",
            "--objective", "blocks", "--block-epochs", "2", "--tune-centroids",
            "--val-data", str(tmp_path / "d.npz"), "--val-limit", "16"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    blocks = record["blocks"]
    assert record["config"]["objective"] == "blocks" and record["history"] == []
    assert len(blocks["history"]) >= 2 and all(len(h["loss_per_pass"]) == 2
                                               for h in blocks["history"] if h["trained"] + h["codebooks"])  # fmt: skip
    assert "48 augmented views" in record["data"] and "guard" in record
    assert (
        not (tmp_path / "blocks.ckpt").exists() and not (tmp_path / "blocks.blocks.ckpt").exists()
    )
    assert qretrain.load(out).features[0].weight.unique().numel() <= 4
    capsys.readouterr()
    assert main([*argv[:-4], "--views", "0"]) == 2
    assert "--views must be at least 1; got 0" in capsys.readouterr().err
    assert main([*argv, "--bn-stats", "update"]) == 2
    assert "keeps batch norm frozen" in capsys.readouterr().err
