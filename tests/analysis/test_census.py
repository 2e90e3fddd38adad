"""The census numbers layers as plans do, attention included."""

from __future__ import annotations

import torch
from torch import nn

from qretrain.analysis.census import take_census
from qretrain.models import number_layers


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 2)  # registered first, called last
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.embed = nn.Linear(4, 8)

    def forward(self, x):  # x: (N, L, 4)
        q = self.embed(x)
        return self.head(self.attention(q, q, q, need_weights=False)[0].mean(1))


def test_attention_layers_are_rows_numbered_as_plans_number_them():
    model, example = Block(), torch.zeros(1, 3, 4)
    rows = take_census(model, example)
    assert [r.module for r in rows] == ["embed", "attention", "attention.out_proj", "head"]
    assert {r.module: r.layer for r in rows} == number_layers(model, example)
    attention = rows[1]
    assert attention.tensors == {"weight": ("attention.in_proj_weight",),
                                 "bias": ("attention.in_proj_bias",)}  # fmt: skip
    assert attention.params == {"weight": 3 * 8 * 8, "bias": 3 * 8}
