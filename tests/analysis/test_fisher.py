"""The Fisher signal: each cell's KL predicted from its clustering error, no pass per cell."""

import json
import re
import sys

import pytest
import torch

from qretrain.analysis import AnalyzeSettings, Sweep, analyze
from qretrain import progress
from qretrain.analysis import fisher
from qretrain.analysis.fisher import predicted_kls
from qretrain.data.sets import tensor_set
from qretrain.errors import QretrainError
from qretrain.metrics.quality import mean_kl
from qretrain.models.layers import get_tensor
from qretrain.planner import PlanSettings, auto_plan

KS = (1, 2, 4, 16, 256)
FISHER = AnalyzeSettings(ks=KS, kinds=("weight",), signal="fisher")


def unlabeled(n=32, seed=3):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8).numpy()
    return tensor_set("tiny", images, None)


def sharpened(model):
    """The tiny model with outputs far from uniform, as a trained model's are."""
    with torch.no_grad():
        get_tensor(model, "classifier.7.weight").mul_(30)
    return model


def spearman(a, b):
    """Rank correlation of two lists without ties."""
    ranks = [torch.tensor(x).argsort().argsort().double() for x in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def test_the_predicted_kl_ranks_the_cells_as_the_measured_kl_does(tiny_vgg):
    """What the signal is for: the planner needs the cells' order, not their values."""
    model, data = sharpened(tiny_vgg), unlabeled(64)
    settings = {"ks": (1, 2, 4, 8, 16), "kinds": ("weight",)}
    measured = analyze(model, data, settings=AnalyzeSettings(**settings), progress=False)
    predicted = analyze(model, data, settings=AnalyzeSettings(**settings, signal="fisher"),
                        progress=False)  # fmt: skip
    assert [(c.unit, c.k) for c in predicted.cells] == [(c.unit, c.k) for c in measured.cells]
    assert [c.file_bytes for c in predicted.cells] == [c.file_bytes for c in measured.cells]
    assert len(measured.cells) == 35 and not any(c.exact for c in measured.cells)
    rho = spearman([c.kl for c in measured.cells], [c.kl for c in predicted.cells])
    assert rho > 0.95, rho  # 0.98 when written
    assert predicted.baseline == measured.baseline


def test_cells_are_predicted_zero_where_nothing_changes_and_grow_as_k_falls(tiny_vgg):
    model = sharpened(tiny_vgg)
    with torch.no_grad():  # three distinct values: k >= 4 leaves the tensor as it is
        weight = get_tensor(model, "features.0.weight")
        values = torch.tensor([-0.3, 0.0, 0.3])[torch.arange(weight.numel()) % 3]
        weight.copy_(values.view_as(weight))
    sweep = analyze(model, unlabeled(), settings=FISHER, progress=False)
    assert all(c.predicted and c.agreement is None and c.top1 is None for c in sweep.cells)
    for k in (4, 16, 256):
        cell = sweep.cell("1", "weight", k)
        assert cell.exact and cell.kl == 0.0
    assert not sweep.cell("1", "weight", 2).exact and sweep.cell("1", "weight", 2).kl > 0
    for unit in sweep.units()[1:]:
        kls = [sweep.cell(unit, "weight", k).kl for k in (1, 2, 4, 16)]
        assert kls[0] == max(kls) and kls[-1] == min(kls) > 0, (unit, kls)


def test_the_prediction_is_the_kl_to_second_order(tiny_vgg):
    """Many label draws: the predicted KL of a small change is the measured KL. The
    layer feeds an in-place ReLU, whose gradient is not the layer's own."""
    model = sharpened(tiny_vgg)
    x = torch.stack([unlabeled(16)[i][0] for i in range(16)])
    name = "features.5.weight"  # a convolution, then ReLU(inplace=True)
    weight = get_tensor(model, name)
    change = 0.2 * weight.std() * torch.randn(weight.shape, generator=torch.Generator()
                                              .manual_seed(0))  # fmt: skip
    predicted, logits = predicted_kls(model, [x[:8], x[8:]], {"cell": {name: change}},
                                      draws=100)  # fmt: skip
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-5)
        weight.add_(change)
        measured = mean_kl(model(x), logits)
        weight.sub_(change)
    assert measured > 1e-6
    assert predicted["cell"] == pytest.approx(measured, rel=0.05)  # 1% when written
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_passes_hold_what_the_budget_allows_and_predict_the_same(tiny_vgg, monkeypatch):
    """A pass records every module's input, output and gradient: a large batch runs
    in passes of as many images as RECORD_BYTES holds (one image first, to measure),
    and since images do not mix the predictions are those of whole batches."""
    model = sharpened(tiny_vgg)
    x = torch.stack([unlabeled(24)[i][0] for i in range(24)])
    name = "features.5.weight"
    change = {"cell": {name: 0.1 * get_tensor(model, name)}}
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))

    whole, logits = predicted_kls(model, [x[:16], x[16:]], change)
    assert seen == [1, 15, 8]  # the first image alone, then the rest of each batch
    # What a pass records of one image: the layer's input, output and output gradient.
    layer = model.get_submodule("features.5")
    sizes = []
    handle = layer.register_forward_hook(
        lambda m, inputs, out: sizes.extend([inputs[0][0].numel(), 2 * out[0].numel()])
    )
    with torch.no_grad():
        model(x[:1])
    handle.remove()
    seen.clear()
    per_image = 4 * sum(sizes)
    monkeypatch.setattr(fisher, "RECORD_BYTES", 5 * per_image)
    small, small_logits = predicted_kls(model, [x[:16], x[16:]], change)
    assert seen == [1, 5, 5, 5, 5, 3]
    assert small["cell"] == pytest.approx(whole["cell"], rel=1e-5)
    assert torch.allclose(small_logits, logits, atol=1e-5)


def test_a_sweep_in_a_log_counts_the_images_of_its_passes(tiny_vgg, tmp_path, monkeypatch,
                                                        caplog):  # fmt: skip
    """The passes are the long part of a Fisher sweep: in a log (stderr not a terminal)
    they print lines of images done, the last with the whole count; without progress,
    none."""
    model = sharpened(tiny_vgg)
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a line for every pass
    monkeypatch.setattr(fisher, "RECORD_BYTES", 1)  # one image a pass
    with open(tmp_path / "log", "w") as log:
        monkeypatch.setattr(sys, "stderr", log)
        for shown in (True, False):
            caplog.clear()
            with caplog.at_level("INFO", logger="qretrain.progress"):
                analyze(model, unlabeled(6), settings=FISHER, progress=shown)
            lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Pred")]
            if shown:
                assert lines[0].startswith("Predicting: 1/6 images, ") and "ETA" in lines[0]
                assert lines[-1].startswith("Predicting: 6/6 images in ")
                assert len(lines) == 7  # a line a pass, then the closing one
            else:
                assert lines == []


def test_the_prediction_depends_on_the_seed_and_the_images(tiny_vgg):
    model = sharpened(tiny_vgg)

    def kls(seed=0, images=3):
        settings = AnalyzeSettings(ks=(2, 16), kinds=("weight",), signal="fisher", seed=seed)
        sweep = analyze(model, unlabeled(seed=images), settings=settings, progress=False)
        return [c.kl for c in sweep.cells]

    assert kls() == kls()
    assert kls(seed=1) != kls()  # other labels drawn
    assert kls(images=4) != kls()


def test_a_predicted_record_loads_plans_on_kl_and_refuses_agreement(tiny_vgg, tmp_path):
    model, data = sharpened(tiny_vgg), unlabeled()
    analyze(model, data, tmp_path, FISHER, progress=False)
    sweep = Sweep.load(tmp_path)
    assert sweep.predicted and sweep.settings["signal"] == "fisher"
    assert "within 1 millinat(s) of predicted KL" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "quality_weight.png").stat().st_size > 0
    target = sweep.baseline["file_bytes"] * 2 // 3
    plan = auto_plan(sweep, model, data, PlanSettings(target_size=target, metric="kl"))
    assert plan.file_bytes <= target * 1.05
    assert plan.measured_drop is not None and plan.measured_drop != plan.predicted_drop
    with pytest.raises(QretrainError, match=re.escape(
            "this sweep predicted each cell's KL from the Fisher information and measured no "
            "agreement: plan with the kl metric, or sweep with signal 'measured'")):  # fmt: skip
        auto_plan(sweep, model, data, PlanSettings(max_drop=1, metric="agreement"))


def test_a_predicted_sweep_resumes_without_a_pass_and_not_into_a_measured_one(tiny_vgg,
                                                                               tmp_path):  # fmt: skip
    model, data = sharpened(tiny_vgg), unlabeled()
    first = analyze(model, data, tmp_path / "f", FISHER, progress=False, plots=False)
    again = analyze(model, data, tmp_path / "f", FISHER, progress=False, plots=False)
    assert again.cells == first.cells and again.seconds == first.seconds
    measured = AnalyzeSettings(ks=(1, 2), kinds=("weight",))
    analyze(model, data, tmp_path / "m", measured, progress=False, plots=False)
    with pytest.raises(QretrainError, match="signal: 'measured' there, 'fisher' now"):
        analyze(model, data, tmp_path / "m", AnalyzeSettings(ks=(1, 2), kinds=("weight",),
                signal="fisher"), progress=False, plots=False)  # fmt: skip


def test_a_record_from_before_the_signal_loads_and_resumes(tiny_vgg, tmp_path):
    model, data = sharpened(tiny_vgg), unlabeled()
    settings = AnalyzeSettings(ks=(1, 2), kinds=("weight",))
    analyze(model, data, tmp_path, settings, progress=False, plots=False)
    record = json.loads((tmp_path / "sweep.json").read_text())
    del record["settings"]["signal"]
    for cell in record["cells"]:
        del cell["predicted"]
    (tmp_path / "sweep.json").write_text(json.dumps(record))
    old = Sweep.load(tmp_path)
    assert not old.predicted and not any(c.predicted for c in old.cells)
    resumed = analyze(model, data, tmp_path, settings, progress=False, plots=False)
    assert resumed.cells == old.cells and resumed.seconds == old.seconds


def test_a_predicted_record_with_a_measured_cell_is_refused(tiny_vgg, tmp_path):
    analyze(sharpened(tiny_vgg), unlabeled(), tmp_path, FISHER, progress=False, plots=False)
    record = json.loads((tmp_path / "sweep.json").read_text())
    record["cells"][0]["agreement"] = 0.5
    record["cells"][1]["predicted"] = False
    (tmp_path / "sweep.json").write_text(json.dumps(record))
    with pytest.raises(QretrainError) as refused:
        Sweep.load(tmp_path)
    message = str(refused.value)
    assert "cell 1: agreement is 0.5; expected null (the sweep predicted each cell's KL and " \
        "measured nothing else)" in message  # fmt: skip
    assert "cell 2: predicted is False, yet the sweep's signal is fisher" in message


def test_bad_settings_are_refused_with_what_to_do():
    with pytest.raises(QretrainError, match=re.escape(
            "signal 'fisher' needs gradients, which batch norm's running statistics have none "
            "of: sweep kinds weight,bias, or signal 'measured'")):  # fmt: skip
        AnalyzeSettings(kinds=("weight", "bn"), signal="fisher")
    with pytest.raises(QretrainError, match=re.escape(
            "signal: must be one of 'measured', 'fisher'; got 'hessian'")):  # fmt: skip
        AnalyzeSettings(signal="hessian")


def test_what_the_prediction_cannot_follow_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    model[0].register_buffer("scale", torch.ones(3))
    with pytest.raises(QretrainError, match=re.escape(
            "0.scale is not a parameter (a buffer has no gradient): the Fisher signal predicts "
            "trained weights only; sweep with signal 'measured'")):  # fmt: skip
        predicted_kls(model, [torch.randn(2, 4)], {"cell": {"0.scale": torch.ones(3)}})
    attention = torch.nn.MultiheadAttention(4, 1, batch_first=True)
    with pytest.raises(QretrainError, match=re.escape(
            "in_proj_weight belongs to a MultiheadAttention, whose output the Fisher signal "
            "cannot follow (it needs convolutions, linear layers and batch norms); sweep with "
            "signal 'measured'")):  # fmt: skip
        predicted_kls(attention, [torch.randn(2, 3, 4)],
                      {"cell": {"in_proj_weight": torch.ones(12, 4)}})  # fmt: skip

    class Unused(torch.nn.Module):  # its layer's weight used directly, never called
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Linear(4, 3)

        def forward(self, x):
            return torch.nn.functional.linear(x, self.inner.weight, self.inner.bias)

    with pytest.raises(QretrainError, match=re.escape(
            "inner never ran as a module of its own (its parent uses its weights directly, as "
            "attention does its out_proj): the Fisher signal cannot follow it; sweep with "
            "signal 'measured'")):  # fmt: skip
        predicted_kls(Unused(), [torch.randn(2, 4)], {"cell": {"inner.weight": torch.ones(3, 4)}})
