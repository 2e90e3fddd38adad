import copy
import itertools

import pytest
import torch

from qretrain.analysis import AnalyzeSettings, Cell, Sweep, analyze
from qretrain.analysis.census import LayerCensus
from qretrain.apply.model import cluster_
from qretrain.data.sets import tensor_set
from qretrain.planner import PlanSettings
from qretrain.planner.auto import STEP, _groups, auto_plan

BASE_BYTES = 100_000


def synthetic_sweep(costs: dict[int, dict[int, tuple[float, int]]]) -> Sweep:
    """A sweep whose per-layer sensitivities are known by construction.

    costs: layer -> k -> (accuracy drop in points, bytes saved).
    """
    census, cells = [], []
    for layer, per_k in costs.items():
        census.append(LayerCensus(layer, f"l{layer}", "Linear", "classifier", (), None,
                                  {"weight": (f"l{layer}.weight",)}, {"weight": 100}))  # fmt: skip
        for k, (drop, saved) in per_k.items():
            cells.append(Cell(str(layer), str(layer), "weight", k, 100, BASE_BYTES - saved,
                              BASE_BYTES, 0.9 - drop / 100, 1.0, 0.0, False, 0.0))  # fmt: skip
    settings = {"model": "synthetic", "data": "none", "method": "kmeans", "seed": 0,
                "granularity": "layer"}  # fmt: skip
    baseline = {"top1": 0.9, "file_bytes": BASE_BYTES, "float32_bytes": 2 * BASE_BYTES}
    return Sweep(settings, census, baseline, cells)


COSTS = {
    1: {1: (5.0, 9_000), 4: (0.6, 7_000), 16: (0.1, 5_000)},
    2: {1: (0.9, 30_000), 4: (0.4, 20_000), 16: (0.0, 10_000)},
    3: {1: (3.0, 4_000), 4: (0.5, 3_500), 16: (0.2, 3_000)},
    4: {1: (0.3, 1_000), 4: (0.1, 800), 16: (0.05, 500)},
}


def brute_force(sweep, budget):
    groups = list(_groups(sweep, "accuracy").values())
    best = (0, ())
    for combo in itertools.product(*[[None, *opts] for opts in groups]):
        picks = [p for p in combo if p is not None]
        if sum(round(p.cost / STEP) for p in picks) <= round(budget / STEP):
            best = max(best, (sum(p.saving for p in picks), tuple(picks)), key=lambda b: b[0])
    return best


@pytest.mark.parametrize("budget", [0.0, 0.3, 1.0, 1.5, 4.0])
def test_selection_is_the_largest_saving_within_the_budget(budget):
    sweep = synthetic_sweep(COSTS)
    result = auto_plan(sweep, settings=PlanSettings(max_drop=budget, metric="accuracy"))
    assert result.predicted_drop <= budget + 1e-9
    best_saving, _ = brute_force(sweep, budget)
    assert BASE_BYTES - result.predicted_file_bytes == best_saving
    # Layer 2 at k=16 costs nothing and saves 10 kB: always taken, even at budget 0.
    assert any(p.unit == "2" for p in result.picks)


def test_target_size_takes_the_cheapest_choice_that_fits():
    sweep = synthetic_sweep(COSTS)
    result = auto_plan(
        sweep, settings=PlanSettings(target_size=BASE_BYTES - 35_000, metric="accuracy")
    )
    assert result.predicted_file_bytes <= BASE_BYTES - 35_000
    assert result.predicted_drop == pytest.approx(1.0)  # l2 k=1 (0.9) + l1 k=16 (0.1)
    with pytest.raises(ValueError, match="target size unreachable"):
        auto_plan(sweep, settings=PlanSettings(target_size=1_000, metric="accuracy"))
    with pytest.raises(ValueError, match="exactly one budget"):
        PlanSettings(metric="accuracy")


def test_the_last_layers_cost_counts_last_layer_weight_times_when_choosing():
    sweep = synthetic_sweep({1: {4: (0.5, 5_000)}, 2: {4: (0.4, 5_000)}})  # layer 2 is last

    def plan(weight: float):
        settings = PlanSettings(target_size=BASE_BYTES - 5_000, metric="accuracy",
                                last_layer_weight=weight)  # fmt: skip
        return auto_plan(sweep, settings=settings)

    assert [p.unit for p in plan(1).picks] == ["2"]  # the cheaper cell
    weighed = plan(3)  # layer 2 now counts 1.2 points against layer 1's 0.5
    assert [p.unit for p in weighed.picks] == ["1"]
    assert weighed.predicted_drop == pytest.approx(0.5)  # reported as predicted, unweighted
    # the plan says it was weighed; an unweighted one says nothing of it
    assert "the last layer's cost weighed 3x" in weighed.to_yaml()
    assert weighed.to_dict()["last_layer_weight"] == 3
    assert "weighed" not in plan(1).to_yaml()
    with pytest.raises(ValueError, match="last_layer_weight"):
        PlanSettings(target_size=1, last_layer_weight=0.5)


def sensitive_net() -> torch.nn.Module:
    """Two linear layers whose predictions vary from image to image (a random-init
    conv net predicts one class for everything, which no clustering can change)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)
    return net.eval()


@pytest.fixture
def swept():
    """sensitive_net, 64 random images, and its sweep over five k."""
    net = sensitive_net()
    g = torch.Generator().manual_seed(5)
    data = tensor_set("rand", torch.randint(0, 256, (64, 1, 28, 28), generator=g,
                                            dtype=torch.uint8).numpy(), None)  # fmt: skip
    sweep = analyze(net, data, settings=AnalyzeSettings(ks=(1, 2, 4, 16, 64)), progress=False)
    return net, data, sweep


def test_plans_are_verified_and_backed_off_until_the_measured_drop_fits(swept):
    net, data, sweep = swept
    # Pretend the first layer's weight is free at every k: selection takes k=1 there,
    # and only the measurement can bring the plan back within budget.
    for c in sweep.cells:
        if (c.unit, c.kind) == ("1", "weight"):
            c.agreement, c.kl = 1.0, 0.0
    result = auto_plan(sweep, net, data, PlanSettings(max_drop=2.0, metric="agreement"))
    assert result.backoffs, "the free-looking plan must have failed its first measurement"
    assert result.measured_drop <= 2.0
    assert result.file_bytes < result.base_file_bytes
    # The plan, applied by cluster_, reproduces the measured drop.
    clustered = copy.deepcopy(net)
    cluster_(clustered, result.plan)
    with torch.no_grad():
        x = torch.stack([data[i][0] for i in range(len(data))])
        same = (clustered(x).argmax(1) == net(x).argmax(1)).float().mean().item()
    assert 100 * (1 - same) == pytest.approx(result.measured_drop, abs=1e-6)
    text = result.to_yaml("sweepdir")
    assert "# measured drop:" in text and "# backed off:" in text


def test_a_kl_budget_is_in_nats_and_verified_in_nats(swept):
    net, data, sweep = swept
    budget = 0.05
    result = auto_plan(sweep, net, data, PlanSettings(max_drop=budget, metric="kl"))
    assert result.unit == "nats of mean KL" and result.picks
    assert result.measured_drop <= budget + 1e-9  # mean KL on the data, in nats
    # The prediction is the picked cells' KL added up.
    assert result.predicted_drop == pytest.approx(
        sum(sweep.cell(p.unit, p.kind, p.k).kl for p in result.picks), rel=1e-6, abs=1e-5
    )
    clustered = copy.deepcopy(net)
    cluster_(clustered, result.plan)
    from qretrain.metrics.quality import mean_kl, predict

    logits, _ = predict(clustered, data)
    reference, _ = predict(net, data)
    assert mean_kl(logits, reference) == pytest.approx(result.measured_drop, rel=1e-5)
    assert "nats of mean KL" in result.to_yaml()
    tighter = auto_plan(sweep, settings=PlanSettings(max_drop=budget / 10, metric="kl"))
    assert tighter.predicted_file_bytes >= result.predicted_file_bytes


def pooled_mlp() -> torch.nn.Module:
    """Six linear layers of about the same size (the sensitive net's first layer is
    most of its file, which leaves a knapsack no alternatives)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(7), torch.nn.Flatten(),
                              torch.nn.Linear(49, 48), torch.nn.ReLU(),
                              *[m for _ in range(4) for m in (torch.nn.Linear(48, 48), torch.nn.ReLU())],
                              torch.nn.Linear(48, 10))  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net.eval()


def plain_and_refined(data_seed: int, saving: int):
    """The pooled MLP's KL plan for ``saving`` bytes off its file, without and with
    up to 3 refine rounds, on 64 random images drawn from ``data_seed``."""
    net = pooled_mlp()
    g = torch.Generator().manual_seed(data_seed)
    data = tensor_set("rand", torch.randint(0, 256, (64, 1, 28, 28), generator=g,
                                            dtype=torch.uint8).numpy(), None)  # fmt: skip
    sweep = analyze(net, data, settings=AnalyzeSettings(ks=(2, 4, 8, 16), kinds=("weight",)),
                    progress=False)  # fmt: skip
    target = sweep.baseline["file_bytes"] - saving
    plain = auto_plan(sweep, net, data, PlanSettings(target_size=target, metric="kl"))
    refined = auto_plan(sweep, net, data, PlanSettings(target_size=target, metric="kl", refine=3))
    return net, data, target, plain, refined


def test_a_refining_round_is_kept_only_when_it_measures_better():
    net, data, target, plain, refined = plain_and_refined(5, 8000)
    # This plan's re-chosen cells measure worse: the round is undone, the plan kept.
    assert len(refined.refinements) == 1 and refined.refinements[0].endswith("(undone)")
    assert refined.plan == plain.plan and refined.measured_drop == plain.measured_drop
    assert refined.file_bytes == plain.file_bytes <= target
    assert "# refined: round 1: 2 cells in or out" in refined.to_yaml()
    assert not refined.costs_refined and "re-fitted" not in refined.to_yaml()
    clustered = copy.deepcopy(net)
    cluster_(clustered, refined.plan)
    from qretrain.metrics.quality import mean_kl, predict

    logits, _ = predict(clustered, data)
    assert mean_kl(logits, predict(net, data)[0]) == pytest.approx(refined.measured_drop, rel=1e-5)


def test_a_kept_round_says_its_predicted_drop_comes_from_refitted_costs():
    _, _, _, plain, refined = plain_and_refined(1, 16000)
    assert refined.refinements[0].endswith("(kept)") and refined.measured_drop < plain.measured_drop
    # After a kept round the cells' costs are the re-fitted ones: the header says so.
    assert refined.costs_refined and not plain.costs_refined
    header = [line for line in refined.to_yaml().splitlines() if "predicted drop" in line]
    expected = (f"# predicted drop: {refined.predicted_drop:.4f} {refined.unit} (costs re-fitted to the "
                "measured drop by refining, not the sweep's)")  # fmt: skip
    assert header == [expected]
    assert "re-fitted" not in plain.to_yaml()


def test_regrouped_costs_are_measured_shares_and_scaled_sweep_costs():
    from qretrain.planner.auto import Pick, _regroup

    def pick(unit, k, cost):
        return Pick(unit, unit, "weight", k, (f"{unit}.weight",), cost, 100 // k)

    groups = {("a", "weight"): [pick("a", 2, 4.0), pick("a", 8, 1.0)],
              ("b", "weight"): [pick("b", 2, 6.0), pick("b", 8, 2.0)],
              ("c", "weight"): [pick("c", 2, 3.0), pick("c", 8, 0.5)]}  # fmt: skip
    picks = [groups["a", "weight"][1], groups["b", "weight"][1]]
    # Measured 9 units; shares 1:2 give a 3 (ratio 3) and b 6 (ratio 3): median 3.
    regrouped = _regroup(groups, picks, 9.0, [0.001, 0.002])
    costs = {key: [o.cost for o in options] for key, options in regrouped.items()}
    assert costs["a", "weight"] == pytest.approx([3.0 + 3 * 3.0, 3.0])  # the pick + scaled step
    assert costs["b", "weight"] == pytest.approx([6.0 + 4 * 3.0, 6.0])
    assert costs["c", "weight"] == pytest.approx([9.0, 1.5])  # unchosen: scaled by 3
    # A negative share (interactions cancel) costs 0, never less; its larger k stay >= 0.
    regrouped = _regroup(groups, picks, 9.0, [-0.001, 0.002])
    assert [o.cost for o in regrouped["a", "weight"]][1] == 0.0
    assert all(o.cost >= 0 for options in regrouped.values() for o in options)


def test_kl_shares_add_up_to_the_plans_kl_for_small_changes(swept):
    """g . (w - w0) / 2 per cell: for a quadratic KL the shares sum to it exactly."""
    from qretrain.metrics.quality import mean_kl, predict
    from qretrain.planner.auto import Pick, _kl_shares

    net, data, _ = swept
    work = copy.deepcopy(net)
    picks, originals = [], {}
    for name, p in work.named_parameters():
        originals[name] = p.detach().clone()
        with torch.no_grad():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(picks))))
        picks.append(Pick(name, name, "weight", 64, (name,), 0.0, 1))
    reference, _ = predict(net, data)
    shares = _kl_shares(work, picks, originals, reference, data, 16, "cpu")
    kl = mean_kl(predict(work, data)[0], reference)
    assert kl > 0 and sum(shares) == pytest.approx(kl, rel=0.05)
    assert all(p.grad is None for p in work.parameters())


def test_refine_needs_a_target_size_and_data_to_measure_on(swept):
    with pytest.raises(ValueError, match="refine re-chooses a target-size plan"):
        PlanSettings(max_drop=1.0, refine=1)
    _, _, sweep = swept
    settings = PlanSettings(target_size=sweep.baseline["file_bytes"] // 2, metric="kl", refine=1)
    with pytest.raises(ValueError, match="refine measures each round on verification data"):
        auto_plan(sweep, settings=settings)


def test_smallest_cost_choice_is_exact_and_its_table_ignores_huge_costs():
    """The cheapest saving-enough choice equals brute force over every combination, and
    options with enormous costs (predicted KLs of 1-value codebooks) do not size the
    DP's table: 10**12 units would need terabytes."""
    import dataclasses
    import random

    from qretrain.planner.auto import Pick, _smallest_cost_for, _units_of

    rng = random.Random(3)
    for trial in range(30):
        groups = {}
        for g in range(4):
            options = [Pick(f"u{g}", f"{g}", "weight", k, (f"u{g}.weight",),
                            rng.uniform(0, 5) * STEP * (9 - k), rng.randint(1, 50) * (9 - k))
                       for k in (1, 2, 4, 8)]  # fmt: skip
            if trial % 3 == 0:  # a 1-value codebook whose predicted cost explodes
                options[0] = dataclasses.replace(options[0], cost=1e12 * STEP)
            groups[(f"u{g}", "weight")] = options
        needed = rng.randint(1, 150)
        combos = itertools.product(*[[None, *opts] for opts in groups.values()])
        feasible = [sum(_units_of(p.cost) for p in c if p)
                    for c in combos if sum(p.saving for p in c if p) >= needed]  # fmt: skip
        if not feasible:
            continue
        picks = _smallest_cost_for(groups, needed)
        assert sum(p.saving for p in picks) >= needed
        assert sum(_units_of(p.cost) for p in picks) == min(feasible)


def test_a_plan_whose_every_saving_costs_beyond_the_planners_resolution_is_refused():
    """Outputs of extreme magnitude make every cell's predicted cost enormous: the DP's
    table would need petabytes (a user's model did this); one clear error instead."""
    from qretrain.errors import QretrainError
    from qretrain.planner.auto import MAX_UNITS, Pick, _smallest_cost_for

    groups = {(f"u{g}", "weight"): [Pick(f"u{g}", f"{g}", "weight", 4, (f"u{g}.weight",),
                                         (MAX_UNITS + 1) * STEP * 1e6, 100)]
              for g in range(3)}  # fmt: skip
    with pytest.raises(QretrainError, match="cannot plan: the cheapest plan that could reach"):
        _smallest_cost_for(groups, 150)
