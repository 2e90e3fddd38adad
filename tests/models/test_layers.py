import torch
from torch import nn

from qretrain.models import ParamKind, describe_tensors, number_layers


class Reordered(nn.Module):
    """Registers its layers in another order than it calls them."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.body = nn.Linear(8, 8)
        self.stem = nn.Conv1d(1, 1, 1)

    def forward(self, x):  # x: (N, 1, 8)
        return self.head(self.body(self.stem(x).flatten(1)))


def test_layers_numbered_in_forward_order_with_an_input():
    model = Reordered()
    assert number_layers(model) == {"head": 1, "body": 2, "stem": 3}
    assert number_layers(model, torch.zeros(1, 1, 8)) == {"stem": 1, "body": 2, "head": 3}


def test_numbering_restores_training_mode():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).train()
    number_layers(model, torch.zeros(1, 1, 3, 3))
    assert model.training and model[1].num_batches_tracked.item() == 0


def test_describe_tensors_kinds_and_ties():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 3, bias=False))
    model[2].weight = model[0].weight  # tied
    infos = {i.name: i for i in describe_tensors(model)}
    assert infos["0.weight"].kind is ParamKind.WEIGHT and infos["0.weight"].layer == 1
    assert infos["1.running_var"].kind is ParamKind.BN_RUNNING_VAR
    assert infos["1.running_var"].layer is None and not infos["1.running_var"].is_parameter
    assert (
        infos["1.num_batches_tracked"].unclusterable_reason() == "torch.int64 buffer, not a weight"
    )
    assert infos["2.weight"].unclusterable_reason() == "shares its storage with 0.weight"
    assert list(infos) == list(model.state_dict())


class Attention(nn.Module):
    """A token mixer around nn.MultiheadAttention, registered out of forward order."""

    def __init__(self, kdim: int | None = None):
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True, kdim=kdim, vdim=kdim)
        self.embed = nn.Linear(4, 8)
        self.keys = nn.Linear(4, kdim or 8)

    def forward(self, x):  # x: (N, L, 4)
        q = self.embed(x)
        kv = self.keys(x)
        return self.head(self.attention(q, kv, kv, need_weights=False)[0].mean(1))


def test_attention_projections_are_layers_in_forward_order():
    model = Attention()
    infos = {i.name: i for i in describe_tensors(model, torch.zeros(1, 3, 4))}
    assert infos["attention.in_proj_weight"].kind is ParamKind.WEIGHT
    assert infos["attention.in_proj_bias"].kind is ParamKind.BIAS
    assert infos["attention.out_proj.weight"].kind is ParamKind.WEIGHT
    # out_proj is never called (attention reads its weight): it follows its attention,
    # not the last layer
    assert number_layers(model, torch.zeros(1, 3, 4)) == {
        "embed": 1,
        "keys": 2,
        "attention": 3,
        "attention.out_proj": 4,
        "head": 5,
    }


def test_separate_key_and_value_projections_are_weights_and_bias_kv_is_not():
    model = Attention(kdim=6)
    model.attention = nn.MultiheadAttention(8, 2, batch_first=True, kdim=6, vdim=6,
                                            add_bias_kv=True)  # fmt: skip
    infos = {i.name: i for i in describe_tensors(model)}
    for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
        assert infos[f"attention.{name}"].kind is ParamKind.WEIGHT
    assert "not in the clusterable table" in infos["attention.bias_k"].unclusterable_reason()


def test_a_layer_never_used_still_comes_last():
    model = Attention()
    model.unused = nn.Linear(2, 2)
    assert number_layers(model, torch.zeros(1, 3, 4))["unused"] == 6
