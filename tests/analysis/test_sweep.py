import json

import pytest
import torch

import qretrain
from qretrain.analysis import AnalyzeSettings, Sweep, analyze, take_census
from qretrain.analysis import sweep as sweep_module
from qretrain.analysis.staged import Stages
from qretrain.cluster.state import clusters_of
from qretrain.cluster.tensor import cluster_many
from qretrain.data.sets import tensor_set
from qretrain.models.layers import get_tensor

KS = (1, 2, 4, 256)


def tiny_data(n=24, labeled=True):
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8).numpy()
    labels = torch.randint(0, 10, (n,), generator=g).numpy() if labeled else None
    return tensor_set("tiny", images, labels)


def test_census_groups_blocks_by_output_size_and_owns_batch_norm(tiny_vgg, tiny_resnet, images):
    rows = take_census(tiny_vgg, images[:1])
    assert [r.block for r in rows] == ["block1"] * 2 + ["block2"] * 2 + ["classifier"] * 3
    assert rows[0].params == {"weight": 1 * 4 * 9, "bias": 4}
    rows = take_census(tiny_resnet, images[:1])
    stem = rows[0]
    assert stem.bn_module == "stem.1" and stem.params["bn"] == 4 * 4
    assert all(r.bn_module for r in rows[:-1]) and rows[-1].block == "classifier"
    assert len({r.block for r in rows}) == 4  # three stages plus the classifier


def test_stages_rerun_from_a_layer_equals_the_whole_model(tiny_resnet, images):
    batches = [images[:3], images[3:]]
    stages = Stages(tiny_resnet, batches)
    rows = take_census(tiny_resnet, images[:1])
    middle = rows[len(rows) // 2]  # inside a residual stage: skip connections cross the split
    stages.advance(stages.boundary_of({middle.module}))
    weight = get_tensor(tiny_resnet, f"{middle.module}.weight")
    with torch.no_grad():
        weight.mul_(-1.5)
        expected = torch.cat([tiny_resnet(x) for x in batches])
        got = stages.logits()
        weight.div_(-1.5)
    assert torch.allclose(got, expected, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(got, torch.cat([tiny_resnet(x) for x in batches]), atol=1e-3)


def test_every_cell_exists_with_exact_sizes_and_quality(tiny_vgg, tmp_path):
    data = tiny_data()
    sweep = analyze(tiny_vgg, data, tmp_path, AnalyzeSettings(ks=KS), progress=False, plots=False)
    units = [str(r.layer) for r in sweep.census]
    expected = {(u, kind, k) for u in units for kind in ("weight", "bias") for k in KS}
    assert {(c.unit, c.kind, c.k) for c in sweep.cells} == expected
    lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert len(lines) == 1 + len(expected)
    # k = 256 leaves every tiny tensor as it was: no pass, the baseline's figures.
    c = sweep.cell("1", "weight", 256)
    assert c.exact and c.agreement == 1.0 and c.kl == 0.0
    # k = 1 of the first conv collapses its output.
    assert sweep.cell("1", "weight", 1).kl > 0
    # A cell's file size is the real file of the model with only that cell clustered.
    cell = sweep.cell("5", "weight", 4)
    model = tiny_vgg
    name = "classifier.1.weight"
    clustered, decoded = cluster_many(get_tensor(model, name), [4])[4]
    with torch.no_grad():
        get_tensor(model, name).copy_(decoded)
    clusters_of(model)[name] = clustered
    real = qretrain.save(model, tmp_path / "cell.h5").file_bytes
    assert abs(cell.file_bytes - real) <= 2048
    # Its quality, measured directly.
    logits = torch.cat([model(x) for x, _ in torch.utils.data.DataLoader(data, batch_size=8)])
    assert cell.top1 == pytest.approx(
        (logits.argmax(1) == data.labels).float().mean().item(), abs=1e-6
    )


def test_a_killed_sweep_resumes_and_skips_finished_cells(tiny_vgg, tmp_path, monkeypatch):
    data = tiny_data(labeled=False)
    full = analyze(
        tiny_vgg, data, tmp_path / "a", AnalyzeSettings(ks=KS), progress=False, plots=False
    )
    calls = {"n": 0}
    real_sweep_kind = sweep_module._sweep_kind

    def dies_after_five(*args, **kwargs):
        for cell in real_sweep_kind(*args, **kwargs):
            if calls["n"] == 5:
                raise KeyboardInterrupt
            calls["n"] += 1
            yield cell

    monkeypatch.setattr(sweep_module, "_sweep_kind", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        analyze(tiny_vgg, data, tmp_path / "b", AnalyzeSettings(ks=KS), progress=False, plots=False)
    assert len(json.loads((tmp_path / "b" / "sweep.json").read_text())["cells"]) == 5
    computed = []

    def counting(*args, **kwargs):
        for cell in real_sweep_kind(*args, **kwargs):
            computed.append((cell.unit, cell.kind, cell.k))
            yield cell

    monkeypatch.setattr(sweep_module, "_sweep_kind", counting)
    resumed = analyze(
        tiny_vgg, data, tmp_path / "b", AnalyzeSettings(ks=KS), progress=False, plots=False
    )
    assert len(computed) == len(full.cells) - 5
    strip = [(c.unit, c.kind, c.k, c.agreement, c.kl, c.file_bytes) for c in full.cells]
    assert [(c.unit, c.kind, c.k, c.agreement, c.kl, c.file_bytes)
            for c in resumed.cells] == strip  # fmt: skip
    computed.clear()
    analyze(tiny_vgg, data, tmp_path / "b", AnalyzeSettings(ks=KS), progress=False, plots=False)
    assert computed == []


def test_a_bfloat16_sweep_warns_where_the_device_computes_it_slowly(
    tiny_vgg, tmp_path, monkeypatch, caplog
):
    settings = AnalyzeSettings(ks=(2,), select="7", precision="bfloat16")
    for fast in (True, False):
        monkeypatch.setattr(sweep_module, "fast_bfloat16", lambda device, fast=fast: fast)
        caplog.clear()
        with caplog.at_level("WARNING", logger="qretrain.analysis.sweep"):
            analyze(tiny_vgg, tiny_data(), tmp_path / str(fast), settings, progress=False,
                    plots=False)  # fmt: skip
        warned = [r for r in caplog.records if "no native support" in r.getMessage()]
        assert len(warned) == (0 if fast else 1)


def test_resuming_with_other_settings_is_refused(tiny_vgg, tmp_path):
    data = tiny_data()
    analyze(tiny_vgg, data, tmp_path, AnalyzeSettings(ks=(1, 2), select="7"), progress=False,
            plots=False)  # fmt: skip
    with pytest.raises(ValueError, match="other settings.*ks: \\[1, 2\\] there, \\[1, 4\\] now"):
        analyze(tiny_vgg, data, tmp_path, AnalyzeSettings(ks=(1, 4), select="7"),
                progress=False, plots=False)  # fmt: skip


def test_blocks_selectors_and_bad_arguments(tiny_resnet):
    data = tiny_data(n=8)
    settings = AnalyzeSettings(ks=(2,), kinds=("weight", "bn"), unit="block", select="4-6,10")
    sweep = analyze(tiny_resnet, data, settings=settings, progress=False)
    assert {(c.unit, c.kind) for c in sweep.cells} == {
        ("block2", "weight"), ("block2", "bn"), ("classifier", "weight")}  # fmt: skip
    assert sweep.cell("block2", "bn", 2).params > 0
    by_type = analyze(tiny_resnet, data, settings=AnalyzeSettings(ks=(2,), kinds=("weight",),
                      select="type=Linear"), progress=False)  # fmt: skip
    assert {c.unit for c in by_type.cells} == {"10"}
    with pytest.raises(ValueError, match="selects no layer"):
        analyze(tiny_resnet, data, settings=AnalyzeSettings(select="99"), progress=False)
    with pytest.raises(
        ValueError, match="kinds: must be some of weight, bias, bn; got \\['weights'\\]"
    ):
        AnalyzeSettings(kinds=("weights",))
    with pytest.raises(ValueError, match="ks: must be ints in \\[1, 256\\]; got \\[0\\]"):
        AnalyzeSettings(ks=(0, 2))
    with pytest.raises(ValueError, match="a sweep selects layers; its kinds are the 'kinds'"):
        AnalyzeSettings(select="kinds=bias")


def test_sweep_folder_gets_plots_summary_and_reloads(tiny_vgg, tmp_path):
    analyze(tiny_vgg, tiny_data(), tmp_path, AnalyzeSettings(ks=(1, 4)), progress=False)
    for name in ("census.png", "size_weight.png", "quality_bias.png", "summary.md", "census.txt"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "census.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = Sweep.load(tmp_path)
    assert len(loaded.cells) == 7 * 2 * 2 and "accuracy" in loaded.summary()
    with pytest.raises(FileNotFoundError, match="holds no sweep.json"):
        Sweep.load(tmp_path / "nowhere")
