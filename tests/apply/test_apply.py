import json

import pytest
import torch

import qretrain
from qretrain.cluster import clusters_of

PLAN = {
    "rules": [
        {"type": "Conv2d", "k": 8},
        {"type": "Linear", "k": 4, "granularity": "channel"},
        {"kinds": ["bias"], "k": 1},
    ]
}


def test_cluster_in_place_keeps_a_plain_module_that_runs(tiny_vgg, images):
    before = {n: t.clone() for n, t in tiny_vgg.state_dict().items()}
    report = qretrain.cluster_(tiny_vgg, PLAN)
    assert type(tiny_vgg).__name__ == "VGGSmall"
    out = tiny_vgg(images)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    for name, tensor in tiny_vgg.state_dict().items():
        if name.endswith("bias"):
            assert tensor.unique().numel() == 1
        elif name.startswith("features"):
            assert tensor.unique().numel() <= 8
        else:  # per output channel
            assert all(row.unique().numel() <= 4 for row in tensor)
        assert not torch.equal(tensor, before[name])  # random init has more than k values
    assert set(clusters_of(tiny_vgg)) == set(before)
    assert len(report.clustered) == len(before)


def test_report_accounts_for_every_tensor(tiny_resnet):
    plan = {"rules": [{"layers": "2-5", "k": 16}, {"name": "fc", "kinds": ["bias"], "k": 1}]}
    report = qretrain.cluster_(tiny_resnet, plan)
    state = tiny_resnet.state_dict()
    assert [r.name for r in report.records] == list(state)
    by_name = {r.name: r for r in report.records}
    assert by_name["fc.bias"].clustered and by_name["fc.bias"].k_used == 1
    assert by_name["fc.weight"].reason == "no rule selects it"
    assert by_name["stem.1.running_mean"].reason == "no rule selects it"
    assert "not clusterable" in by_name["stem.1.num_batches_tracked"].reason
    clustered = [r for r in report.records if r.clustered]
    assert len(clustered) == 5  # four conv weights (layers 2-5) and the fc bias
    for r in clustered:
        assert r.bits_per_weight == pytest.approx(r.stored_bytes * 8 / r.numel)
        assert r.sq_error >= 0
    assert report.original_bytes == sum(t.numel() * t.element_size() for t in state.values())
    assert report.stored_bytes < report.original_bytes
    data = json.loads(report.to_json())
    assert len(data["tensors"]) == len(state) and data["clustered_tensors"] == 5
    text = str(report)
    assert "fc.bias" in text and "tensors clustered" in text


def test_batch_norm_kinds_cluster_when_asked(tiny_resnet, images):
    plan = {"rules": [{"kinds": ["bn"], "k": 2}]}
    qretrain.cluster_(tiny_resnet, plan)
    bn = tiny_resnet.stem[1]
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        assert t.unique().numel() <= 2
    assert torch.isfinite(tiny_resnet(images)).all()


def test_bad_weights_change_nothing(tiny_vgg):
    with torch.no_grad():
        tiny_vgg.features[2].weight[0, 0, 0, 0] = float("nan")
    before = {n: t.clone() for n, t in tiny_vgg.state_dict().items()}
    with pytest.raises(ValueError, match=r"nothing was changed:\n.*features.2.weight has 1 NaN"):
        qretrain.cluster_(tiny_vgg, PLAN)
    for name, tensor in tiny_vgg.state_dict().items():
        assert torch.equal(tensor.nan_to_num(), before[name].nan_to_num())
    assert clusters_of(tiny_vgg) == {}


def test_rule_matching_nothing_changes_nothing(tiny_vgg):
    before = {n: t.clone() for n, t in tiny_vgg.state_dict().items()}
    with pytest.raises(qretrain.PlanError, match="rule 2"):
        qretrain.cluster_(tiny_vgg, {"rules": [{"type": "Linear", "k": 2}, {"name": "fc", "k": 2}]})
    assert all(torch.equal(t, before[n]) for n, t in tiny_vgg.state_dict().items())


def test_non_float32_models_are_refused(tiny_vgg):
    tiny_vgg.double()
    with pytest.raises(ValueError, match=r"torch.float64; qretrain clusters float32 models"):
        qretrain.cluster_(tiny_vgg, PLAN)


def test_plan_from_yaml_path(tiny_vgg, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("rules:\n  - {layers: 5-6, k: 2}\n")
    report = qretrain.cluster_(tiny_vgg, str(path))
    assert {r.name for r in report.clustered} == {"classifier.1.weight", "classifier.4.weight"}


def test_clustering_that_makes_a_tensor_larger_is_warned(caplog):
    model = qretrain.build_model("torch.nn:Linear", in_features=3, out_features=3, bias=False)
    qretrain.cluster_(model, {"rules": [{"type": "Linear", "k": 9}]})
    assert "1 clustered tensor(s) take more bytes than as float32 (weight: 41 bytes" in caplog.text
    caplog.clear()
    big = qretrain.build_model("torch.nn:Linear", in_features=64, out_features=64, bias=False)
    qretrain.cluster_(big, {"rules": [{"type": "Linear", "k": 16}]})
    assert "take more bytes" not in caplog.text
    qretrain.cluster_(model, {"rules": [{"type": "Linear", "k": 9}]}, warn_larger=False)
    assert "take more bytes" not in caplog.text


def test_pairs_where_channels_do_not_pair_up_say_so(tiny_vgg, caplog):
    with caplog.at_level("INFO", logger="qretrain"):
        qretrain.cluster_(tiny_vgg, {"granularity": "pairs", "rules": [
            {"type": "Linear", "k": 4, "kinds": ["weight", "bias"]}]})  # fmt: skip
    books = clusters_of(tiny_vgg)
    assert books["classifier.1.weight"].granularity.value == "pairs"
    assert books["classifier.1.bias"].granularity.value == "tensor"
    assert "3 tensor(s) of granularity 'pairs' have no pairs of output channels" in caplog.text
