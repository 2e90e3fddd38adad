"""What a new user hits first: each rough edge, reproduced."""

import textwrap

import torch

import qretrain
from qretrain.cli.main import main


def test_a_plan_without_rules_writes_a_plain_file(tmp_path, capsys):
    (tmp_path / "none.yaml").write_text("rules: []\n")
    out = tmp_path / "plain.h5"
    assert main(["compress", "qretrain.zoo:vgg_small", "--plan", str(tmp_path / "none.yaml"),
                 "-o", str(out), "--quiet"]) == 0  # fmt: skip
    assert "0 of" in capsys.readouterr().out
    assert not qretrain.cluster.clusters_of(qretrain.load(out))


def test_input_contract_is_public_and_a_missing_one_is_named(caplog):
    assert qretrain.InputContract(1, 28, (0.5,), (0.5,)).shape == (1, 28, 28)
    with caplog.at_level("WARNING"):
        qretrain.build_model("torch.nn:Identity")
    assert "torch.nn:Identity declares no input contract" in caplog.text
    assert "qretrain.InputContract" in caplog.text


def test_torchvision_without_weights_warns_they_are_random(capsys):
    assert main(["inspect", "torchvision:resnet18"]) == 0
    assert "torchvision:resnet18 has random weights" in capsys.readouterr().err


def test_a_callable_from_the_current_folder_is_importable(tmp_path, monkeypatch, capsys):
    (tmp_path / "mynets.py").write_text(
        textwrap.dedent("""
        import torch
        import qretrain

        def tiny():
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))

        tiny.contract = qretrain.InputContract(1, 2, (0.5,), (0.5,))
    """)
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))]
    )
    assert main(["inspect", "mynets:tiny"]) == 0
    assert "Linear" in capsys.readouterr().out
    assert main(["inspect", "nosuchmodule:tiny"]) == 2
    assert "run qretrain from the folder that holds it" in capsys.readouterr().err


def test_retrain_takes_teacher_weights_and_can_keep_its_checkpoint(retrain_files, capsys):
    tmp_path = retrain_files(32)
    teacher = qretrain.load(tmp_path / "teacher.h5")
    torch.save(teacher.state_dict(), tmp_path / "teacher.pth")
    out = tmp_path / "r.h5"
    argv = [
        "retrain",
        str(tmp_path / "student.h5"),
        "--teacher",
        "qretrain.zoo:vgg_small",
        "--teacher-weights",
        str(tmp_path / "teacher.pth"),
        "--data",
        str(tmp_path / "d.npz"),
        "-o",
        str(out),
        "--epochs",
        "1",
        "--keep-checkpoint",
    ]
    # The student's spec: the teacher is built with the student's arguments (width 4)
    assert main(argv) == 0 and out.with_suffix(".ckpt").exists()
    # another spec builds its default width, which these weights do not fit
    other = list(argv)
    other[other.index("qretrain.zoo:vgg_small")] = "qretrain.zoo:resnet_small"
    assert main(other) == 2
    assert "does not fit the architecture" in capsys.readouterr().err
    spec_argv = [a if a != "qretrain.zoo:vgg_small" else str(tmp_path / "teacher.h5")
                 for a in argv]  # fmt: skip
    assert main(spec_argv) == 0
