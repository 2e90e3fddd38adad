from pathlib import Path

import pytest
import torch
from torch import nn

import qretrain
from qretrain.cluster import Method
from qretrain.models import ParamKind
from qretrain.plan import Plan, PlanError, Rule, parse_layers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plans"


def chosen(plan: Plan, model: nn.Module) -> dict[str, int]:
    return {d.info.name: d.choice.k for d in plan.resolve(model) if d.choice is not None}


class Blocks(nn.Module):
    """Names that a careless regex would confuse: layers.1 vs layers.11."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(12))
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def test_glob_does_not_let_layers_1_match_layers_11():
    plan = Plan.from_dict({"rules": [{"name": "layers.1", "k": 4}]})
    assert chosen(plan, Blocks()) == {"layers.1.weight": 4}
    glob = Plan.from_dict({"rules": [{"name": "layers.1*", "k": 4}]})
    assert set(chosen(glob, Blocks())) == {
        "layers.1.weight",
        "layers.10.weight",
        "layers.11.weight",
    }


def test_regex_needs_the_re_prefix_and_matches_whole_names():
    plan = Plan.from_dict({"rules": [{"name": r"re:layers\.[0-2]", "k": 4}]})
    assert set(chosen(plan, Blocks())) == {f"layers.{i}.weight" for i in range(3)}


def test_type_matches_subclasses_and_kinds_select_batch_norm():
    plan = Plan.from_dict(
        {"rules": [{"type": "_BatchNorm", "kinds": ["bn"], "k": 2}, {"type": "Linear", "k": 8}]}
    )
    got = chosen(plan, Blocks())
    assert {n for n in got if n.startswith("norm")} == {
        "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var"
    }  # fmt: skip
    assert "norm.num_batches_tracked" not in got
    assert sum(1 for n in got if n.startswith("layers")) == 12


def test_layer_ranges_follow_inspect_numbering():
    plan = Plan.from_dict({"rules": [{"layers": "2-3,12", "kinds": ["weight", "bias"], "k": 4}]})
    assert set(chosen(plan, Blocks())) == {
        f"layers.{i}.{p}" for i in (1, 2, 11) for p in ("weight", "bias")
    }


def test_precedence_exact_name_over_pattern_over_layers_over_type_over_kinds():
    rules = [
        {"name": "layers.0", "k": 2},  # exact name
        {"name": "layers.*", "k": 3},  # pattern
        {"layers": "1-2", "k": 4},  # layers
        {"type": "Linear", "k": 5},  # type
        {"kinds": ["weight"], "k": 6},  # kinds only
    ]
    # Listed most specific first, so "later wins" alone would give the opposite.
    got = chosen(Plan.from_dict({"rules": rules}), Blocks())
    assert got["layers.0.weight"] == 2
    assert got["layers.1.weight"] == 3
    no_pattern = Plan.from_dict({"rules": [rules[2], rules[3], rules[4]]})
    got = chosen(no_pattern, Blocks())
    assert got["layers.1.weight"] == 4 and got["layers.5.weight"] == 5


def test_equally_specific_rules_later_wins_and_null_leaves_alone():
    plan = Plan.from_dict(
        {"rules": [{"type": "Linear", "k": 5}, {"type": "Linear", "k": 7},
                   {"name": "layers.3", "k": None}]}
    )  # fmt: skip
    decisions = {d.info.name: d for d in plan.resolve(Blocks())}
    assert decisions["layers.0.weight"].choice.k == 7
    assert decisions["layers.3.weight"].choice is None
    assert decisions["layers.3.weight"].reason == "rule 3 leaves it alone (k: null)"
    assert decisions["layers.3.bias"].reason == "no rule selects it"
    assert "not clusterable" in decisions["norm.num_batches_tracked"].reason


def test_rule_matching_nothing_is_an_error_naming_it():
    plan = Plan.from_dict({"rules": [{"type": "Linear", "k": 4}, {"name": "fc9", "k": 4}]})
    with pytest.raises(PlanError, match=r"rule 2 \(name='fc9', kinds=\[weight\]\) matches no"):
        plan.resolve(Blocks())


def test_all_errors_reported_together_with_unknown_keys_named():
    bad = {
        "methd": "kmeans",
        "rules": [{"k": 0}, {"name": "x", "kind": ["weight"], "k": 4}, {"layers": "3-1", "k": 2},
                  {"kinds": ["gamma"], "k": 2}, {"type": "Linear"}],
    }  # fmt: skip
    with pytest.raises(PlanError) as info:
        Plan.from_dict(bad)
    text = str(info.value)
    for expected in [
        "unknown key 'methd'",
        "rule 1: k must be an int in [1, 256] or null; got 0",
        "rule 2: unknown key 'kind'",
        "rule 3: layers '3-1'",
        "rule 4: unknown kind 'gamma'",
        "rule 5: needs k",
    ]:
        assert expected in text


def test_yaml_and_dict_round_trip(tmp_path):
    plan = Plan(
        rules=(
            Rule(k=32, layers="14-15"),
            Rule(k=1, kinds=(ParamKind.BIAS,)),
            Rule(k=None, name="re:fc.*", method=Method.LINEAR, granularity="channel"),
        ),
        method="equal-count",
        seed=3,
    )
    assert Plan.from_dict(plan.to_dict()) == plan
    path = tmp_path / "plan.yaml"
    path.write_text(plan.to_yaml())
    assert Plan.load(path) == plan


def test_bad_yaml_and_missing_file():
    with pytest.raises(PlanError, match="not valid YAML"):
        Plan.from_yaml("rules: [k: 4")
    with pytest.raises(PlanError, match="does not exist"):
        Plan.load("/nonexistent/plan.yaml")


def test_parse_layers():
    assert parse_layers("13-15, 2") == {2, 13, 14, 15}
    assert parse_layers(7) == {7}
    for bad in ("0-3", "a", "3-", ""):
        with pytest.raises(ValueError):
            parse_layers(bad)


def test_vgg16_paper_plan_selects_the_seeds_tensors():
    model = qretrain.build_model("torchvision:vgg16")
    got = chosen(Plan.load(EXAMPLES / "vgg16-paper.yaml"), model)
    assert {n: k for n, k in got.items() if k != 1} == {
        "classifier.0.weight": 32, "classifier.3.weight": 32
    }  # fmt: skip
    biases = {n for n, k in got.items() if k == 1}
    assert biases == {n for n in model.state_dict() if n.endswith("bias")} and len(biases) == 16


def test_resnet50_paper_plan_selects_layers_14_to_53_and_leaves_batch_norm():
    torch.manual_seed(0)
    model = qretrain.build_model("torchvision:resnet50")
    got = chosen(Plan.load(EXAMPLES / "resnet50-paper.yaml"), model)
    weights = {n for n, k in got.items() if k == 256}
    assert len(weights) == 40  # the seed's 37 layers plus 3 projections in that span
    assert "layer2.0.conv3.weight" in weights and "layer2.0.conv2.weight" not in weights
    assert "layer4.2.conv3.weight" in weights and "fc.weight" not in weights
    assert {n for n, k in got.items() if k == 1} == {"fc.bias"}
    assert not any(".bn" in n or "downsample.1" in n for n in got)
