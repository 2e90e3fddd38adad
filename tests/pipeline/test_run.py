import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import qretrain
from qretrain.cli.main import main
from qretrain.assets.pools import reference
from qretrain.retrain import loop


@pytest.fixture
def tiny_run(tmp_path):
    """A saved tiny VGG-style model, labeled and far-off npz sets, and a config."""
    torch.manual_seed(0)
    qretrain.save(qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16),
                  tmp_path / "m.h5")  # fmt: skip
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (160, 28, 28), dtype=np.uint8),
             y=rng.integers(0, 10, 160))  # fmt: skip
    np.savez(tmp_path / "far.npz", x=(rng.random((64, 28, 28)) < 0.1).astype(np.uint8) * 255)
    data = str(tmp_path / "d.npz")
    config = {
        "output": str(tmp_path / "run"),
        "model": str(tmp_path / "m.h5"),
        "data": {
            "analyze": {"spec": data, "limit": 40},
            "verify": {"spec": data, "limit": 40, "offset": 40},
            "retrain": {"spec": data, "limit": 64, "offset": 80},
            "evaluate": {"spec": data, "limit": 40},
            "far_off": str(tmp_path / "far.npz"),
            "guard": {"spec": data, "limit": 16, "offset": 144},
        },
        "analyze": {"ks": [1, 4, 32], "kinds": ["weight"]},
        "plan": {"max_drop": 30, "metric": "agreement"},
        "retrain": {"epochs": 2, "batch_size": 16, "far_off": True, "conventional": True},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def test_run_end_to_end_then_rerun_skips_every_stage(tiny_run, capsys):
    path, config = tiny_run
    assert main(["run", str(path), "--quiet"]) == 0
    out_text = capsys.readouterr().out
    run = qretrain.pipeline.RunConfig.load(path).output
    for name in ("config.yaml", "analyze/sweep.csv", "plan.yaml", "clustered.h5",
                 "label_free.json", "conventional.json", "far_off.json", "evaluate.json",
                 "report.md", "report.html", "figures/time.png"):  # fmt: skip
        assert (run / name).exists(), name
    evaluation = json.loads((run / "evaluate.json").read_text())
    assert set(evaluation["models"]) == {"original", "clustered", "label_free",
                                         "conventional", "far_off", "uniform"}  # fmt: skip
    assert evaluation["models"]["original"]["agreement"] == 1.0
    uniform = evaluation["models"]["uniform"]  # one k for every weight, no smaller a file
    assert uniform["label"].startswith("uniform k=")  # (else the largest k tried: 256)
    assert (uniform["file_bytes"] >= evaluation["models"]["clustered"]["file_bytes"]
            or uniform["label"].startswith("uniform k=256 "))  # fmt: skip
    # The final table shows the records' figures.
    for m in evaluation["models"].values():
        assert f"{m['agreement']:.2%}" in out_text
    far = json.loads((run / "far_off.json").read_text())
    guard = far["guard"]  # the guard at work: kept only what is surely closer to the original
    assert guard["images"] == 16 and (guard["kept"] == "start") == (guard["kl_change_95"][1] >= 0)
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 and "Figure" in page
    report = (run / "report.md").read_text()
    compress = json.loads((run / "compress.json").read_text())
    largest = max(compress["tensor_file_bytes"], key=compress["tensor_file_bytes"].get)
    assert "bits per weight (on disk)" in report and largest in report  # the per-tensor table
    assert f"metadata {qretrain._table.human_bytes(compress['breakdown']['metadata'])}" in report
    assert main(["run", str(path)]) == 0
    rerun = capsys.readouterr().err  # stage lines are log lines, on stderr
    assert rerun.count("done before") == 7  # analyze, plan, compress, 3 retrains, evaluate
    assert main(["run", str(path), "--quiet"]) == 0
    assert "done before" not in capsys.readouterr().err
    assert main(["report", str(run)]) == 0


def test_killed_during_retraining_resumes_to_the_uninterrupted_result(tiny_run, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    path, config = tiny_run
    config["retrain"] = {"epochs": 3, "batch_size": 16, "conventional": False}
    whole = tmp_path / "whole.yaml"
    whole.write_text(yaml.safe_dump({**config, "output": str(tmp_path / "whole")}))
    assert main(["run", str(whole), "--quiet"]) == 0
    killed = tmp_path / "killed.yaml"
    killed.write_text(yaml.safe_dump({**config, "output": str(tmp_path / "killed")}))
    real_epoch, calls = loop._train_epoch, {"n": 0}

    def dies_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", dies_in_epoch_two)
    assert main(["run", str(killed), "--quiet"]) == 130
    assert (tmp_path / "killed" / "label_free.ckpt").exists()
    assert not (tmp_path / "killed" / "label_free.json").exists()
    monkeypatch.setattr(loop, "_train_epoch", real_epoch)
    assert main(["run", str(killed), "--quiet"]) == 0
    a = json.loads((tmp_path / "whole" / "label_free.json").read_text())
    b = json.loads((tmp_path / "killed" / "label_free.json").read_text())
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert a["quality_after"] == b["quality_after"]
    sa = qretrain.load(tmp_path / "whole" / "label_free.h5").state_dict()
    sb = qretrain.load(tmp_path / "killed" / "label_free.h5").state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_unknown_keys_and_missing_data_are_clear_errors(tiny_run, tmp_path, capsys,
                                                       monkeypatch):  # fmt: skip
    path, config = tiny_run
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({**config, "retrian": {}, "plan": {"max_drop": 1, "metirc": "agreement"}})
    )
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'retrian'" in err and "plan: unknown key 'metirc'" in err
    monkeypatch.setattr(reference, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump({**config, "output": str(tmp_path / "m"),
                                       "data": {**config["data"],
                                                "analyze": "fashion-mnist:test"}}))  # fmt: skip
    assert main(["run", str(missing), "--quiet"]) == 2
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().err
    # A different config into the same folder is refused.
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**config, "output": str(tmp_path / "m"),
                                     "analyze": {"ks": [2]}}))  # fmt: skip
    assert main(["run", str(other), "--quiet"]) == 2
    assert "holds a run of another config" in capsys.readouterr().err


@pytest.mark.parametrize("section,key,value,message", [
    ("retrain", "trainable", "bogus", "retrain: trainable: must be 'unclustered', 'last' or"),
    ("plan", "max_drop", "lots", "plan: max_drop: must be a finite number; got 'lots'"),
    ("analyze", "ks", [0, 999], r"analyze: ks: must be ints in \[1, 256\]; got \[0, 999\]"),
    ("compress", "layout", "zip", "compress: layout: must be one of 'packed', 'paper'; got 'zip'"),
    ("retrain", "epochs", -1, "retrain: epochs: must be an int >= 1; got -1"),
    ("analyze", "signal", "fisher", "analyze.signal fisher predicts each cell's KL and no "
     "agreement: set plan.metric kl, or analyze.signal measured"),
])  # fmt: skip
def test_each_bad_value_fails_before_any_stage(tiny_run, tmp_path, capsys, section, key, value,
                                               message):  # fmt: skip
    import re
    import time

    path, config = tiny_run
    config = {**config, section: {**(config.get(section) or {}), key: value}}
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    assert main(["run", str(path), "--quiet"]) == 2
    assert time.perf_counter() - start < 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not Path(config["output"]).exists()  # nothing ran, nothing was written


def test_every_problem_of_a_config_in_one_message(tiny_run, capsys):
    path, config = tiny_run
    config = {**config, "device": "tpu",
              "analyze": {"ks": [0], "unit": "row"},
              "retrain": {"epochs": -1, "trainable": "bogus", "far_off": "yes"}}  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    for problem in (
        "analyze: ks:",
        "analyze: unit:",
        "retrain: epochs:",
        "retrain: trainable:",
        "retrain: far_off: must be true or false",
        "device: device must be",
    ):
        assert problem in err, (problem, err)


def test_report_html_renders_its_images_in_headless_chromium(tiny_run, tmp_path):
    import importlib.util
    import shutil

    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed (make render-check installs it)")
    spec = importlib.util.spec_from_file_location(
        "check_report_render", Path(__file__).parents[2] / "benchmarks" / "check_report_render.py"
    )
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    path, _ = tiny_run
    assert main(["run", str(path), "--quiet"]) == 0
    page = qretrain.pipeline.RunConfig.load(path).output / "report.html"
    loaded, total = checker.check(page, tmp_path / "shot.png")
    assert total >= 5 and loaded == total
    assert (tmp_path / "shot.png").read_bytes()[:4] == b"\x89PNG"
    # A broken image is caught, not waved through.
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text().replace("base64,iVBOR", "base64,AAAA", 1))
    assert checker.check(broken, tmp_path / "b.png") == (total - 1, total)


def test_a_second_run_into_a_busy_folder_is_refused(tiny_run, capsys):
    path, config = tiny_run
    from qretrain.storage import folder_lock

    with folder_lock(config["output"], "qretrain run"):
        assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is in use by qretrain run (pid" in err and err.count("\n") == 1
    assert not (Path(config["output"]) / "config.yaml").exists()


def test_a_record_whose_file_changed_is_not_done(tiny_run, capsys):
    """A kill between a stage's file and its record leaves the stage to run again."""
    path, config = tiny_run
    config["retrain"] = None
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--quiet"]) == 0
    out = Path(config["output"])
    sha = json.loads((out / "compress.json").read_text())["file_sha256"]
    assert sha == qretrain.storage.file_sha256(out / "clustered.h5")
    record = json.loads((out / "compress.json").read_text())
    record["file_sha256"] = "0" * 64  # as if clustered.h5 were another run's
    (out / "compress.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["run", str(path)]) == 0
    text = capsys.readouterr().err
    assert "[compress] done before" not in text and "[plan] done before" in text
    # Records are trusted in order only: evaluate.json was made from the old file.
    assert "[evaluate] done before" not in text


def test_run_retrains_block_wise_on_views_and_reports_the_blocks(tiny_run, capsys):
    path, config = tiny_run
    config["data"]["retrain"] = {**config["data"]["retrain"], "views": 48}
    config["retrain"] = {"objective": "blocks", "block_epochs": 1, "batch_size": 16,
                         "tune_centroids": True, "tune_assignments": True,
                         "conventional": True}  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--quiet"]) == 2  # views have no labels to be conventional
    assert "retrain.conventional needs labels, and augmented views" in capsys.readouterr().err
    assert not Path(config["output"]).exists()
    config["retrain"]["conventional"] = False
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--quiet"]) == 0
    run = qretrain.pipeline.RunConfig.load(path).output
    record = json.loads((run / "label_free.json").read_text())
    assert record["config"]["objective"] == "blocks" and "48 augmented views" in record["data"]
    evaluation = json.loads((run / "evaluate.json").read_text())
    drop = evaluation["models"]["label_free"]
    low, high = drop["drop_95"]
    assert low <= drop["top1_drop"] <= high
    report = (run / "report.md").read_text()
    assert "block-wise reconstruction" in report and "drop [95%]" in report
    assert record["config"]["tune_assignments"] is True
    choices = [h["assignments"] for h in record["blocks"]["history"]]
    assert "| assignments |" in report
    for choice in choices:  # each block's choice is in the report's table
        shown = (
            f"learned: {choice['moved']:,} of {choice['free']:,} moved"
            if choice["chosen"] == "learned"
            else f"nearest (of {choice['free']:,} free)"
        )
        assert shown in report
    assert not list(run.glob("*.ckpt"))


def test_the_uniform_baseline_bisects_to_the_smallest_k_no_smaller(tiny_vgg):
    from qretrain.pipeline.run import UNIFORM_KS, _uniform_baseline
    from qretrain.storage import file_bytes

    sizes = {}
    for k in UNIFORM_KS:  # the linear scan the bisection must agree with
        model = copy.deepcopy(tiny_vgg)
        qretrain.cluster_(model, {"rules": [{"type": "Conv2d", "k": k}, {"type": "Linear", "k": k}]},
                          warn_larger=False)  # fmt: skip
        sizes[k] = file_bytes(model)
    assert [sizes[k] for k in UNIFORM_KS] == sorted(sizes.values(), reverse=True)
    for budget in (sizes[256] + 1, sizes[64], sizes[64] - 1, sizes[64] + 1, sizes[2] - 1):
        expected = [k for k in UNIFORM_KS if sizes[k] >= budget][-1:] or [UNIFORM_KS[0]]
        expected = expected[0]
        k, model, size = _uniform_baseline(tiny_vgg, budget)
        assert (k, size) == (expected, sizes[expected]) and file_bytes(model) == size


def test_the_recipe_form_runs_what_qretrain_compress_does(tmp_path, capsys):
    """A run config of the recipe's form and qretrain.compress with the same settings
    write the same model file: one code path, so one set of figures."""
    torch.manual_seed(0)
    model = qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16)
    qretrain.save(model, tmp_path / "m.h5")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (130, 28, 28), dtype=np.uint8),
             y=rng.integers(0, 10, 130))  # fmt: skip
    np.savez(tmp_path / "far.npz", x=(rng.random((64, 28, 28)) < 0.1).astype(np.uint8) * 255)
    config = {"output": str(tmp_path / "run"), "model": str(tmp_path / "m.h5"),
              "data": {"unlabeled": str(tmp_path / "d.npz"), "far_off": str(tmp_path / "far.npz"),
                       "evaluate": {"spec": str(tmp_path / "d.npz"), "limit": 40}},
              "recipe": {"target": "4x", "recover": "output", "epochs": 1, "conventional": True,
                         "far_off": True}}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "run.yaml"), "--quiet"]) == 0
    run = tmp_path / "run"
    evaluation = json.loads((run / "evaluate.json").read_text())
    assert set(evaluation["models"]) == {"original", "clustered", "label_free", "conventional",
                                         "far_off", "uniform"}  # fmt: skip
    assert json.loads((run / "split.json").read_text())["held_out"] == 50
    assert "guard" in json.loads((run / "far_off.json").read_text())
    result = qretrain.compress(qretrain.load(tmp_path / "m.h5"), tmp_path / "d.npz", target="4x",
                               recover="output", settings=qretrain.RecipeSettings(
                                   target="4x", recover="output", epochs=1))  # fmt: skip
    guard = json.loads((run / "label_free.json").read_text())["guard"]
    assert guard["kept"] == {"retrained": "retrained", "clustered": "start"}[result.kept]
    kept = run / ("label_free.h5" if result.kept == "retrained" else "clustered.h5")
    assert kept.read_bytes() == result.file_data
    assert "conventional" in (run / "report.md").read_text()
