"""qretrain.compress and `qretrain compress --target`: the recipe in one call and one command."""

import copy
import importlib
import json
import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

import qretrain
from qretrain.cli.main import main
from qretrain.models.channels import batch_norm_after, scale_channels
from qretrain.recipe import RecipeSettings, Target, split
from qretrain.recipe import stages
from qretrain.recipe.settings import BFLOAT16_FROM, LAST_LAYER_WEIGHT
from qretrain.recipe.stages import guard


@pytest.fixture(scope="module")
def teacher():
    """A tiny VGG-style net trained a little on blobs, so its outputs mean something."""
    torch.manual_seed(0)
    return _trained(qretrain.build_model("qretrain.zoo:vgg_small", width=4, hidden=16))


def _trained(model):
    """``model`` after 30 Adam steps on 400 blobs, in eval mode."""
    x, y = _blobs(400, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model((x - 0.286) / 0.353), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _blobs(n, seed):
    """28x28 images with a bright square whose position is the class (10 classes)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 5)
        x[i, 0, 4 + 10 * r : 12 + 10 * r, 1 + 5 * col : 6 + 5 * col] += 0.7
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of 150 unlabeled PNGs (what a user brings)."""
    folder = tmp_path_factory.mktemp("images")
    x, _ = _blobs(150, seed=2)
    for i, image in enumerate(x):
        Image.fromarray((image[0].numpy() * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.parametrize("value,ratio,size", [
    ("7x", 7.0, None), (7, 7.0, None), (6.5, 6.5, None), ("2.6MB", None, 2_600_000),
    ("900KB", None, 900_000), (2682299, None, 2682299), ("2682299B", None, 2682299),
])  # fmt: skip
def test_targets_are_ratios_or_sizes(value, ratio, size):
    target = Target.parse(value)
    assert (target.ratio, target.size) == (ratio, size)
    assert Target.parse(str(target)) == target
    assert Target.parse("7x").bytes_for(18_776_096) == 2_682_299


@pytest.mark.parametrize("value", ["1x", "0.5", "-3", "7y", "", True, [7]])
def test_bad_targets_say_what_is_allowed(value):
    with pytest.raises(ValueError, match=r"ratio"):
        Target.parse(value)


def test_settings_need_exactly_one_budget():
    with pytest.raises(ValueError, match="give exactly one of target"):
        RecipeSettings()
    with pytest.raises(ValueError, match="give exactly one of target"):
        RecipeSettings(target="7x", max_drop=0.01)


def test_the_fisher_signal_needs_the_kl_metric_and_reaches_the_sweep():
    with pytest.raises(ValueError, match=re.escape(
            "signal 'fisher' predicts each cell's KL and no agreement: metric must be 'kl', or "
            "signal 'measured'")):  # fmt: skip
        RecipeSettings(target=7, metric="agreement", signal="fisher")
    # fisher by default for the kl metric, measured for agreement, or as given
    assert RecipeSettings(target=7).analyze_settings(1 << 20, False).signal == "fisher"
    agreement = RecipeSettings(max_drop=1, metric="agreement")
    assert agreement.analyze_settings(1, False).signal == "measured"
    measured = RecipeSettings(target=7, signal="measured")
    assert measured.analyze_settings(1 << 20, False).signal == "measured"
    assert RecipeSettings(target=7).to_dict()["signal"] == "fisher"  # the record says which
    assert RecipeSettings.from_dict(measured.to_dict()) == measured


def test_the_sweep_runs_in_bfloat16_only_for_a_large_model_on_a_device_that_computes_it():
    settings = RecipeSettings(target=7)
    assert settings.analyze_settings(BFLOAT16_FROM, True).precision == "bfloat16"
    # an AVX2 CPU computes bfloat16 by a fallback several times slower: float32 there
    assert settings.analyze_settings(BFLOAT16_FROM, False).precision == "float32"
    assert settings.analyze_settings(BFLOAT16_FROM - 1, True).precision == "float32"


@pytest.mark.parametrize("recover, weight", [("blocks", LAST_LAYER_WEIGHT), ("output", 1.0)])
def test_the_recipe_weighs_the_last_layer_when_it_retrains_block_wise(
    teacher, images, tmp_path, monkeypatch, recover, weight
):
    class Planned(Exception):
        pass

    def planner(sweep, model, data, settings, **kwargs):
        raise Planned(settings.last_layer_weight)

    monkeypatch.setattr(stages, "auto_plan", planner)
    with pytest.raises(Planned) as planned:
        qretrain.compress(teacher, images, target="4x", recover=recover, workdir=tmp_path)
    assert planned.value.args == (weight,)


def test_split_holds_images_out_and_depends_on_the_seed(images, teacher):
    data = qretrain.load_dataset(images, qretrain.models.get_arch(teacher).contract)
    parts = split(data, RecipeSettings(target="4x"))
    assert parts.to_dict() == {"held_out": 50, "sweep": 100, "verify": 100, "retrain": 100}
    held = set(parts.held_out.paths)
    assert not held & set(parts.retrain.paths) and not held & set(parts.sweep.paths)
    assert parts.held_out.labels is None
    again = split(data, RecipeSettings(target="4x"))
    other = split(data, RecipeSettings(target="4x", seed=1))
    assert again.held_out.paths == parts.held_out.paths != other.held_out.paths


def test_too_few_images_are_refused_with_one_line(tmp_path, teacher, capsys):
    Image.new("L", (28, 28)).save(tmp_path / "one.png")
    qretrain.save(teacher, tmp_path / "m.h5")
    code = main(["compress", str(tmp_path / "m.h5"), "--data", str(tmp_path), "--target", "4x",
                 "-o", str(tmp_path / "out.h5")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "1 image are too few to retrain a model and check the result; give at least 100" in err
    assert not (tmp_path / "out.h5").exists()


def test_guard_keeps_the_start_unless_retraining_is_surely_closer(teacher, caplog):
    x, _ = _blobs(120, seed=3)
    held = qretrain.data.sets.tensor_set("held", (x * 255).to(torch.uint8).numpy(), None)
    held.contract = qretrain.models.get_arch(teacher).contract
    worse = copy.deepcopy(teacher)
    with torch.no_grad():
        worse.classifier[-1].bias.add_(torch.linspace(-1, 1, 10))
    with caplog.at_level(logging.WARNING):
        decision = guard(teacher, teacher, worse, held, device="cpu")
    assert decision["kept"] == "start" and decision["kl_change_95"][1] > 0
    assert "did not make the model surely closer to the original" in caplog.text
    decision = guard(teacher, worse, teacher, held, device="cpu")
    assert decision["kept"] == "retrained" and decision["kl_change_95"][1] < 0


def test_guard_refuses_closer_probabilities_with_fewer_right_answers(teacher):
    """KL can fall while answers flip: an over-confident start (logits x4) gives every
    answer right but is far in KL; a slightly biased model is close in KL but flips
    some answers. The guard keeps the start."""
    x, _ = _blobs(200, seed=5)
    held = qretrain.data.sets.tensor_set("held", (x * 255).to(torch.uint8).numpy(), None)
    held.contract = qretrain.models.get_arch(teacher).contract
    sharp, biased = copy.deepcopy(teacher), copy.deepcopy(teacher)
    with torch.no_grad():
        sharp.classifier[-1].weight.mul_(4)
        sharp.classifier[-1].bias.mul_(4)
        biased.classifier[-1].bias[0].add_(1.0)
    decision = guard(teacher, sharp, biased, held, device="cpu")
    assert decision["kl_change_95"][1] < 0  # closer in KL ...
    assert decision["agreement_retrained"] < decision["agreement_start"] == 1.0  # ... fewer answers
    assert decision["kept"] == "start"


def test_one_call_reaches_the_target_guards_and_saves_what_it_measured(teacher, images, tmp_path):
    result = qretrain.compress(teacher, images, target="4x")
    assert result.ratio >= 4 and result.file_bytes <= round(result.float32_bytes / 4)
    assert set(result.quality) == {"clustered", "retrained"} and result.held_out == 50
    assert result.kept in ("retrained", "clustered")
    kept = result.quality["retrained" if result.kept == "retrained" else "clustered"]
    assert kept.kl <= result.quality["clustered"].kl  # never worse than the start
    path = result.save(tmp_path / "small.h5")
    assert path.read_bytes() == result.file_data
    x, _ = _blobs(8, seed=4)
    x = (x - 0.286) / 0.353
    assert torch.equal(qretrain.load(path)(x), result.model(x))
    summary = result.summary()
    assert "x smaller than float32" in summary and "held-out images" in summary
    same = qretrain.compress(teacher, images, target="4x")
    assert same.file_data == result.file_data  # a seed decides every random choice
    other = qretrain.compress(teacher, images, target="4x", seed=1, recover="none")
    assert other.file_data != result.file_data and set(other.quality) == {"clustered"}


def test_one_command_writes_the_model_and_its_record(teacher, images, tmp_path, capsys):
    qretrain.save(teacher, tmp_path / "m.h5")
    out = tmp_path / "small.h5"
    assert main(["compress", str(tmp_path / "m.h5"), "--data", str(images), "--target", "4x",
                 "--recover", "output", "--epochs", "2", "-o", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr()
    assert "x smaller than float32" in printed.out and "kept the" in printed.out
    assert "[analyze]" in printed.err and "\r" not in printed.err
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["settings"]["recover"] == "output" and record["file_bytes"] == out.stat().st_size
    assert "retrain (output)" in record["seconds"]  # the flag chose the stage that ran
    assert record["settings"]["epochs"] == 2
    assert qretrain.load(out) is not None


def test_the_fisher_signal_plans_from_predicted_kl_and_verifies_by_measuring(teacher, images,
                                                                           tmp_path):  # fmt: skip
    qretrain.save(teacher, tmp_path / "m.h5")
    work, out = tmp_path / "work", tmp_path / "small.h5"
    assert main(["compress", str(tmp_path / "m.h5"), "--data", str(images), "--target", "4x",
                 "--signal", "fisher", "--recover", "none", "--work", str(work), "-o", str(out),
                 "--quiet"]) == 0  # fmt: skip
    sweep = json.loads((work / "analyze" / "sweep.json").read_text())
    assert sweep["settings"]["signal"] == "fisher"
    assert all(c["predicted"] and c["agreement"] is None for c in sweep["cells"])
    plan = json.loads((work / "plan.json").read_text())
    assert plan["metric"] == "kl" and plan["measured_drop"] is not None  # measured on verify
    assert "measured drop" in (work / "plan.yaml").read_text()
    assert json.loads(out.with_suffix(".json").read_text())["settings"]["signal"] == "fisher"


def _uneven_resnet():
    """A small ResNet trained a little on the blobs, then each convolution's output
    channels multiplied by factors of 0.1 to 10 and its batch norm's statistics with
    them: the same function, with channels that differ in size by up to 100x (as a
    trained depthwise convolution's do)."""
    torch.manual_seed(0)
    model = _trained(qretrain.build_model("qretrain.zoo:resnet_small", width=4, blocks=1))
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, bn in batch_norm_after(model).items():
            factor = 10 ** (torch.rand(len(modules[bn].running_mean)) * 2 - 1)
            dict(model.named_parameters())[name].mul_(factor.reshape(-1, 1, 1, 1))
            modules[bn].running_mean.mul_(factor)
            modules[bn].running_var.mul_(factor.square())
    return model.eval()


def test_channel_scales_cluster_the_scaled_copy_and_retrain_from_scaled_values(images, monkeypatch):
    """With channel_scales (the default) the recipe sweeps, plans and clusters the scaled
    copy (the file's weights are the scaled ones, clustered), and block-wise retraining's learned
    assignments start from the original's weights in the student's scales. How much
    closer the start is: tests/models/test_channels.py, benchmarks/bench_channel_scale.py."""
    from qretrain.retrain import blocks

    compress_module = importlib.import_module("qretrain.recipe.compress")  # not the function

    model = _uneven_resnet()
    originals = {}

    def learned(tuner, names, values, *args):
        originals.update(values)
        return real(tuner, names, values, *args)

    teachers = []

    def retrain_stage(name, teacher, *args, **kwargs):
        teachers.append({k: v.clone() for k, v in teacher.state_dict().items()})
        return stage(name, teacher, *args, **kwargs)

    real, stage = blocks.LearnedAssignments, compress_module.retrain_stage
    monkeypatch.setattr(blocks, "LearnedAssignments", learned)
    monkeypatch.setattr(compress_module, "retrain_stage", retrain_stage)
    scaled = qretrain.compress(
        model, images, target="4x", settings=RecipeSettings(target=4, epochs=1)
    )
    assert scaled.settings.channel_scales  # the default
    # The teacher is the original, not the scaled copy.
    (taught,) = teachers
    assert all(torch.equal(taught[k], v) for k, v in model.state_dict().items())
    assert scaled.file_bytes <= round(scaled.float32_bytes / 4)
    expected = copy.deepcopy(model)
    scales = scale_channels(expected)
    weights = dict(expected.named_parameters())
    assert set(originals) & set(scales), originals.keys()  # some scaled weights were tuned
    for name, value in originals.items():
        torch.testing.assert_close(value, weights[name].detach(), rtol=1e-5, atol=1e-7)
    # The kept model's weights are the scaled ones: every channel's largest near 1
    # (clustered, perhaps retrained), where the original's reach 1.5 and beyond.
    kept, original = dict(scaled.model.named_parameters()), dict(model.named_parameters())
    assert max(original[n].detach().abs().max() for n in scales) > 1.5
    assert all(kept[n].detach().abs().max() < 1.5 for n in scales)


@pytest.mark.parametrize("argv,message", [
    (["--target", "1000x"], "a ratio must be in (1, 256]"),
    (["--target", "50MB"], "is no smaller than the model's file without clustering"),
    (["--target", "4x", "--layout", "paper"], "--layout applies to --plan"),
    (["--target", "4x", "--signal", "fisher", "--metric", "agreement"],
     "signal 'fisher' predicts each cell's KL and no agreement: metric must be 'kl'"),
])  # fmt: skip
def test_bad_targets_are_one_line(teacher, images, tmp_path, capsys, argv, message):
    qretrain.save(teacher, tmp_path / "m.h5")
    code = main(["compress", str(tmp_path / "m.h5"), "--data", str(images), *argv, "-o",
                 str(tmp_path / "o.h5"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.h5").exists()


def test_a_work_folder_resumes_the_same_run_and_refuses_another(teacher, images, tmp_path, caplog):
    work = tmp_path / "work"
    first = qretrain.compress(teacher, images, target="4x", recover="none", workdir=work)
    assert (work / "clustered.h5").is_file() and (work / "run.json").is_file()
    with caplog.at_level(logging.INFO, logger="qretrain"):
        again = qretrain.compress(teacher, images, target="4x", recover="none", workdir=work)
    assert "[analyze] done before" in caplog.text and again.file_data == first.file_data
    # The folder records the signal that ran: the default, fisher, resumes as if named;
    # measured is another run (its folders, as those made before the setting, omit it).
    assert json.loads((work / "run.json").read_text())["settings"]["signal"] == "fisher"
    named = qretrain.compress(teacher, images, recover="none", workdir=work,
                              settings=RecipeSettings(target="4x", signal="fisher"))  # fmt: skip
    assert named.file_data == first.file_data
    with pytest.raises(ValueError, match="holds a compress run with another settings"):
        qretrain.compress(teacher, images, settings=RecipeSettings(target="4x", signal="measured"),
                          recover="none", workdir=work)  # fmt: skip
    with pytest.raises(ValueError, match="holds a compress run with another settings"):
        qretrain.compress(teacher, images, target="5x", recover="none", workdir=work)
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        other.classifier[-1].bias.add_(1)
    with pytest.raises(ValueError, match="holds a compress run with another model"):
        qretrain.compress(other, images, target="4x", recover="none", workdir=work)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "report.md").write_text("mine")
    with pytest.raises(ValueError, match="holds files qretrain compress did not write"):
        qretrain.compress(teacher, images, target="4x", workdir=tmp_path / "foreign")
    assert (tmp_path / "foreign" / "report.md").read_text() == "mine"


def test_a_target_for_core_ml_sizes_the_package_with_exact_tables(teacher, images, tmp_path,
                                                                  capsys):  # fmt: skip
    pytest.importorskip("coremltools", reason="pip install 'qretrain[coreml]'")
    qretrain.save(teacher, tmp_path / "m.h5")
    out = tmp_path / "small.h5"
    assert main(["compress", str(tmp_path / "m.h5"), "--data", str(images), "--target", "32KB",
                 "--deploy", "coreml", "--recover", "none", "-o", str(out), "--quiet"]) == 0  # fmt: skip
    assert "Core ML package:" in capsys.readouterr().out
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["settings"]["deploy"] == "coreml"
    assert {r["k"] for r in record["plan"]["rules"]} <= {2, 4, 8, 16, 64, 256}
    assert record["deploy_bytes"] <= 32_000  # unclustered, the package takes 44.5 KB
    # 40 KB is more than the unclustered .h5 (32 KB) but less than its package: not refused
    between = qretrain.compress(teacher, images, recover="none",
                                settings=RecipeSettings(target="40KB", deploy="coreml"))  # fmt: skip
    assert between.deploy_bytes <= 40_000
    exported = qretrain.export(qretrain.load(out), tmp_path / "m.mlpackage", "coreml")
    assert exported.file_bytes == record["deploy_bytes"]  # what the target sized is the export
    assert main(["compress", str(tmp_path / "m.h5"), "--plan", str(tmp_path / "p.yaml"),
                 "--deploy", "coreml", "-o", str(tmp_path / "o.h5")]) == 2  # fmt: skip
    assert "--deploy: for the recipe" in capsys.readouterr().err
