"""Plans sized for Core ML: only the k its lookup tables store exactly, and a package
measured, not guessed, within the target."""

import copy

import pytest
import torch

import qretrain
from qretrain.analysis import AnalyzeSettings, analyze
from qretrain.apply.model import cluster_
from qretrain.data.sets import tensor_set
from qretrain.errors import QretrainError
from qretrain.export.options import Deploy
from qretrain.planner import PlanSettings
from qretrain.planner import auto as planner
from qretrain.planner.auto import auto_plan

pytest.importorskip("coremltools", reason="pip install 'qretrain[coreml]'")


@pytest.fixture(scope="module")
def swept():
    """A small ResNet with convs large enough for tables to pay, 32 images, its sweep."""
    torch.manual_seed(0)
    net = qretrain.build_model("qretrain.zoo:resnet_small", width=16, blocks=1).eval()
    g = torch.Generator().manual_seed(3)
    pixels = torch.randint(0, 256, (32, 1, 28, 28), generator=g, dtype=torch.uint8).numpy()
    data = tensor_set("rand", pixels, None)
    settings = AnalyzeSettings(ks=(4, 8, 16, 32, 64, 128, 256), kinds=("weight",))
    return net, data, analyze(net, data, settings=settings, progress=False, plots=False)


@pytest.fixture(scope="module")
def costly(swept):
    """``swept`` with every k under 32 costing much: a random net loses little at any
    k, so the file's plan would take k=4 everywhere; this one takes k=32 (5 bits)."""
    net, data, sweep = swept
    sweep = copy.deepcopy(sweep)
    for c in sweep.cells:
        if c.k < 32:
            c.kl = 1.0
    return net, data, sweep


def test_a_coreml_plan_takes_exact_k_and_its_package_is_within_the_target(costly, tmp_path):
    net, data, sweep = costly
    h5 = auto_plan(sweep, net, data, PlanSettings(target_size=120_000, metric="kl"))
    coreml = auto_plan(sweep, net, data, PlanSettings(target_size=120_000, metric="kl",
                                                      deploy="coreml"))  # fmt: skip
    assert {p.k for p in h5.picks} == {32}
    assert {p.k for p in coreml.picks} == {64}  # 32 would pay 6 bits: 64 costs the same
    assert coreml.file_bytes <= 120_000 and coreml.deploy is Deploy.COREML
    assert "# Core ML package:" in coreml.to_yaml() and coreml.to_dict()["deploy"] == "coreml"
    # The size the planner measured is the package export writes for the plan.
    clustered = copy.deepcopy(net)
    cluster_(clustered, coreml.plan)
    exported = qretrain.export(clustered, tmp_path / "m.mlpackage", "coreml")
    assert exported.file_bytes == coreml.file_bytes
    # Predicted with every tensor's lookup in the program: a little over, never under.
    assert coreml.file_bytes <= coreml.predicted_file_bytes < 1.1 * coreml.file_bytes


def test_a_package_measured_over_the_target_is_chosen_again(costly, monkeypatch):
    net, data, sweep = costly
    sized = planner._coreml_groups

    def underestimated(groups, model, progress):  # a program 30,000 bytes smaller than it is
        groups, base = sized(groups, model, progress)
        return groups, base - 30_000

    monkeypatch.setattr(planner, "_coreml_groups", underestimated)
    result = auto_plan(sweep, net, data, PlanSettings(target_size=120_000, metric="kl",
                                                      deploy="coreml"))  # fmt: skip
    assert result.resized and "measured" in result.resized[0]
    first = int(result.resized[0].split("measured ")[1].split(" bytes")[0].replace(",", ""))
    assert first > 120_000  # the first plan's package missed, and was measured to
    assert result.file_bytes <= 120_000
    assert "# re-sized:" in result.to_yaml()


def test_a_coreml_plan_needs_the_model_to_measure(swept):
    _, _, sweep = swept
    with pytest.raises(QretrainError, match="sized by converting the model: give the model"):
        auto_plan(sweep, settings=PlanSettings(target_size=60_000, deploy="coreml"))
    with pytest.raises(ValueError, match="deploy"):
        PlanSettings(target_size=60_000, deploy="tflite")


@pytest.mark.parametrize("granularity", ["channel", "pairs"])
def test_codebooks_per_channel_are_sized_as_their_tables_and_exported_as_measured(
    tmp_path, granularity
):
    """Also codebooks of pairs: one table of 2-vectors, an index per pair."""
    torch.manual_seed(0)
    net = qretrain.build_model("qretrain.zoo:resnet_small", width=16, blocks=1).eval()
    g = torch.Generator().manual_seed(3)
    data = tensor_set("rand", torch.randint(0, 256, (16, 1, 28, 28), generator=g,
                                            dtype=torch.uint8).numpy(), None)  # fmt: skip
    settings = AnalyzeSettings(ks=(4, 16, 64), kinds=("weight",),
                               granularities=f"tensor,{granularity}")  # fmt: skip
    sweep = analyze(net, data, settings=settings, progress=False, plots=False)
    for c in sweep.cells:  # the other granularity looks nearly free: the plan takes it
        c.kl = c.kl / 100 if c.granularity == granularity else c.kl + 0.01
    result = auto_plan(sweep, net, data, PlanSettings(target_size=130_000, metric="kl",
                                                      deploy="coreml"))  # fmt: skip
    assert granularity in {p.granularity for p in result.picks}
    assert result.file_bytes <= 130_000
    # Each channel's table predicted as coremltools writes it: the plan's package, a
    # little over for the program, never under; and export writes what was measured.
    assert result.file_bytes <= result.predicted_file_bytes < 1.1 * result.file_bytes
    clustered = copy.deepcopy(net)
    cluster_(clustered, result.plan)
    exported = qretrain.export(clustered, tmp_path / "m.mlpackage", "coreml")
    assert exported.file_bytes == result.file_bytes
