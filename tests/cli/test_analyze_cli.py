import numpy as np
import torch
import yaml

import qretrain
from qretrain.cli.main import main


def test_analyze_then_plan_then_compress(tmp_path, capsys):
    torch.manual_seed(0)
    qretrain.save(qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16),
                  tmp_path / "m.h5")  # fmt: skip
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (80, 28, 28), dtype=np.uint8))
    sweep = tmp_path / "sweep"
    argv = ["analyze", str(tmp_path / "m.h5"), "--data", str(tmp_path / "d.npz"), "--limit",
            "40", "--ks", "1,4,32", "-o", str(sweep)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "classifier" in out and "42 cells" in out  # census table, 7 layers x 2 kinds x 3 k
    for name in ("sweep.csv", "sweep.json", "census.png", "size_weight.png", "summary.md"):
        assert (sweep / name).exists(), name
    plan = tmp_path / "plan.yaml"
    argv = ["plan", str(sweep), "--max-drop", "5", "-o", str(plan), "--offset", "40"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "measured drop" in out and "images 40" not in out
    text = plan.read_text()
    assert text.startswith("# Automatic plan") and "# packed file:" in text
    assert yaml.safe_load(text)["rules"]
    argv = ["compress", str(tmp_path / "m.h5"), "--plan", str(plan), "-o",
            str(tmp_path / "c.h5"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    # Bad input: unknown folder, bad ks, unlabeled data with the accuracy metric.
    capsys.readouterr()
    assert main(["plan", str(tmp_path / "none"), "--max-drop", "1", "-o", str(plan)]) == 2
    assert "holds no sweep.json" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "m.h5"), "--data", str(tmp_path / "d.npz"),
                 "--ks", "1,x", "-o", str(sweep)]) == 2  # fmt: skip
    assert "analyze: ks: must be ints in [1, 256]; got '1,x'" in capsys.readouterr().err
    assert main(["plan", str(sweep), "--max-drop", "1", "--metric", "accuracy", "-o",
                 str(plan)]) == 2  # fmt: skip
    assert "no labels" in capsys.readouterr().err


def test_analyze_with_the_fisher_signal_then_plan_on_kl(tmp_path, capsys):
    torch.manual_seed(0)
    qretrain.save(qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16),
                  tmp_path / "m.h5")  # fmt: skip
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (80, 28, 28), dtype=np.uint8))
    sweep, plan = tmp_path / "sweep", tmp_path / "plan.yaml"
    assert main(["analyze", str(tmp_path / "m.h5"), "--data", str(tmp_path / "d.npz"), "--limit",
                 "40", "--ks", "1,4,32", "--kinds", "weight", "--signal", "fisher", "--no-plots",
                 "-o", str(sweep)]) == 0  # fmt: skip
    assert "millinat(s) of predicted KL" in capsys.readouterr().out
    assert main(["plan", str(sweep), "--max-drop", "1", "-o", str(plan)]) == 2
    assert ("measured no agreement: plan with the kl metric, or sweep with signal 'measured'"
            in capsys.readouterr().err)  # fmt: skip
    assert main(["plan", str(sweep), "--max-drop", "0.01", "--metric", "kl", "-o", str(plan),
                 "--offset", "40"]) == 0  # fmt: skip
    assert "measured drop" in capsys.readouterr().out
    assert (
        main(
            [
                "analyze",
                str(tmp_path / "m.h5"),
                "--data",
                str(tmp_path / "d.npz"),
                "--signal",
                "fisher",
                "--kinds",
                "weight,bn",
                "-o",
                str(tmp_path / "s2"),
            ]
        )
        == 2
    )
    assert "signal 'fisher' needs gradients" in capsys.readouterr().err
