"""One codebook per output channel as a choice: the sweep's channel cells, the record
that keeps them, and the planner weighing them against one codebook per tensor."""

import copy
import json

import pytest
import torch


from qretrain.analysis import AnalyzeSettings, Sweep, analyze
from qretrain.apply.model import cluster_
from qretrain.cluster.options import Granularity
from qretrain.cluster.state import clusters_of
from qretrain.data.sets import tensor_set
from qretrain.errors import QretrainError, QretrainFileError
from qretrain.planner import PlanSettings
from qretrain.planner.auto import auto_plan
from qretrain.recipe.settings import RecipeSettings
from qretrain.storage import file_bytes

KS = (2, 4, 16)
BOTH = ("tensor", "channel")


def sensitive_net() -> torch.nn.Module:
    """Two linear layers whose predictions vary from image to image, with rows of
    different scales (where a codebook per row pays)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)
        net[1].weight.mul_(torch.logspace(-1, 1, 32).unsqueeze(1))
    return net.eval()


def images(n: int = 64):
    g = torch.Generator().manual_seed(5)
    pixels = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8).numpy()
    return tensor_set("rand", pixels, None)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    net, data = sensitive_net(), images()
    settings = AnalyzeSettings(ks=KS, granularities=BOTH)
    return net, data, analyze(net, data, folder, settings, progress=False, plots=False), folder


def test_weights_get_channel_cells_where_codebooks_stay_small_and_biases_do_not(both):
    _, _, sweep, folder = both
    cells = {(c.unit, c.kind, c.granularity, c.k) for c in sweep.cells}
    # Layer 1's rows hold 784 weights: 16 values a row is small beside their indices.
    # Layer 2's rows hold 32: even 2 float32 values a row outweigh half of 32 bits.
    expected = {("1", "weight", g, k) for g in BOTH for k in KS}
    expected |= {("2", "weight", "tensor", k) for k in KS}
    expected |= {(u, "bias", "tensor", k) for u in ("1", "2") for k in KS}
    assert cells == expected
    header = (folder / "sweep.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["unit", "layers", "kind", "granularity", "k"]
    assert Sweep.load(folder).cells == sweep.cells  # the record keeps them


def test_a_channel_cell_costs_codebook_bytes_and_moves_the_outputs_less(both, tmp_path):
    net, _, sweep, _ = both
    for k in KS:
        tensor, channel = (sweep.cell("1", "weight", k, g) for g in BOTH)
        assert channel.file_bytes > tensor.file_bytes  # 32 codebooks instead of one
        assert channel.kl < tensor.kl
    # Its size is the real file's with that one tensor clustered per channel.
    model = copy.deepcopy(net)
    cluster_(model, {"rules": [{"name": "1", "k": 4, "kinds": ["weight"],
                                "granularity": "channel"}]})  # fmt: skip
    real = file_bytes(model)
    assert abs(sweep.cell("1", "weight", 4, "channel").file_bytes - real) <= 2048


def test_the_fisher_signal_predicts_channel_cells_too():
    net, data = sensitive_net(), images(32)
    settings = AnalyzeSettings(ks=(2,), kinds=("weight",), granularities=BOTH, signal="fisher")
    sweep = analyze(net, data, settings=settings, progress=False, plots=False)
    tensor, channel = (sweep.cell("1", "weight", 2, g) for g in BOTH)  # rows 100x apart
    assert channel.predicted and 0 < channel.kl < tensor.kl


def test_a_record_from_before_granularities_reads_as_per_tensor(both, tmp_path):
    _, _, sweep, folder = both
    raw = json.loads((folder / "sweep.json").read_text())
    del raw["settings"]["granularities"]
    raw["cells"] = [c for c in raw["cells"] if c.pop("granularity") == "tensor"]
    (tmp_path / "sweep.json").write_text(json.dumps(raw))
    old = Sweep.load(tmp_path)
    assert {c.granularity for c in old.cells} == {"tensor"}
    assert len(old.cells) == len([c for c in sweep.cells if c.granularity == "tensor"])


def test_a_record_with_another_granularity_is_refused(both, tmp_path):
    _, _, _, folder = both
    raw = json.loads((folder / "sweep.json").read_text())
    raw["cells"][0]["granularity"] = "group"
    (tmp_path / "sweep.json").write_text(json.dumps(raw))
    with pytest.raises(QretrainFileError, match="granularity is 'group'; expected one of "
                                                "tensor, channel, pairs"):  # fmt: skip
        Sweep.load(tmp_path)


def test_settings_name_known_granularities_and_records_keep_their_keys():
    with pytest.raises(QretrainError, match="must be some of tensor, channel, pairs; got"):
        AnalyzeSettings(granularities="tensor,group")
    assert "granularities" not in AnalyzeSettings().to_dict()  # records made before it
    assert AnalyzeSettings(granularities="channel,tensor").granularities == ("channel", "tensor")
    recipe = RecipeSettings(target="8x", granularities="tensor,channel")
    assert recipe.analyze_settings(10**6, False).granularities == BOTH
    assert "granularities" not in RecipeSettings(target="8x").to_dict()


def test_the_planner_takes_a_channel_cell_where_it_saves_error_and_the_file_is_real(both, tmp_path):
    net, data, sweep, _ = both
    tensor_only = copy.deepcopy(sweep)
    tensor_only.cells = [c for c in sweep.cells if c.granularity == "tensor"]
    target = sweep.cell("1", "weight", 4).file_bytes  # the first layer's weight at k=4, or so
    settings = PlanSettings(target_size=target, metric="kl")
    plain = auto_plan(tensor_only, net, data, settings)
    chosen = auto_plan(sweep, net, data, settings)
    assert all(p.granularity == "tensor" for p in plain.picks)
    channel = [p for p in chosen.picks if p.granularity == "channel"]
    assert channel, "a codebook per row of a layer whose rows differ in scale 100x pays"
    assert chosen.file_bytes <= target and chosen.measured_drop < plain.measured_drop
    # The plan says so rule by rule, and applying it gives the verified file.
    rules = {r.name: r for r in chosen.plan.rules}
    for p in channel:
        assert rules[p.tensors[0].rpartition(".")[0]].granularity is Granularity.CHANNEL
    assert "granularity: channel" in chosen.to_yaml()
    assert "granularity: channel" not in plain.plan.to_yaml().split("rules:")[1]
    model = copy.deepcopy(net)
    cluster_(model, chosen.plan)
    assert file_bytes(model) == chosen.file_bytes
    assert Granularity.CHANNEL in {c.granularity for c in clusters_of(model).values()}


def test_pairs_cells_are_swept_where_output_channels_pair_up_within_a_group():
    """Pairs of a depthwise convolution would join two groups, which Core ML cannot
    store as a table of pairs: such layers, odd ones and biases get no pairs cells."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, groups=8), torch.nn.ReLU(),  # depthwise: one channel a group
        torch.nn.Conv2d(8, 8, 3, groups=2), torch.nn.ReLU(),  # four channels a group
        torch.nn.Conv2d(8, 5, 3), torch.nn.Flatten(), torch.nn.Linear(5 * 20 * 20, 10),
    ).eval()  # fmt: skip
    settings = AnalyzeSettings(ks=(4, 16), granularities=("tensor", "pairs"))
    sweep = analyze(net, images(16), settings=settings, progress=False, plots=False)
    paired = {(c.unit, c.kind) for c in sweep.cells if c.granularity == "pairs"}
    units = {c.unit for c in sweep.cells}
    assert len(units) == 5
    weights = {unit for unit, kind in paired if kind == "weight"}
    assert len(weights) == 3 and len({u for u, kind in paired if kind == "bias"}) == 0
    for c in sweep.cells:
        if c.granularity == "pairs":
            assert c.file_bytes > 0 and c.kl >= 0


def test_pairs_need_kmeans_and_a_layer_core_ml_pairs_along_its_output_channels():
    from qretrain.analysis.sweep import _pairs_fit

    with pytest.raises(QretrainError, match="granularity 'pairs' clusters with method 'kmeans' "
                                            "only; got method 'linear'"):  # fmt: skip
        AnalyzeSettings(granularities="tensor,pairs", method="linear")
    net = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 8, 3), torch.nn.Conv2d(8, 8, 3),
                              torch.nn.Linear(4, 6), torch.nn.Bilinear(2, 2, 4))  # fmt: skip
    fits = {name: _pairs_fit(net, f"{name}.weight") for name in ("0", "1", "2", "3")}
    assert fits == {"0": False, "1": True, "2": True, "3": False}
