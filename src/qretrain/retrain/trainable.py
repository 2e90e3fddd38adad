"""Which parameters retraining may change.

Clustered tensors always stay on their codebook values (the file keeps its size);
``--tune-centroids`` trains the codebook values themselves, never the assignments.
"""

from __future__ import annotations

import torch
from torch import nn

from qretrain.cluster.state import clusters_of
from qretrain.errors import QretrainError
from qretrain.models.layers import call_order, describe_tensors, type_names
from qretrain.models.selector import Selector
from qretrain.retrain.config import Trainable


def trainable_names(model: nn.Module, trainable: Trainable,
                    example_input: torch.Tensor | None) -> list[str]:  # fmt: skip
    """Names of the parameters to train, in ``model.named_parameters()`` order."""
    clustered = set(clusters_of(model))
    params = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
    unclustered = [n for n in params if n not in clustered]
    if trainable.mode == "unclustered":
        chosen = unclustered
    elif trainable.mode == "last":
        order = _module_call_order(model, example_input)
        owners = [n.rpartition(".")[0] for n in clustered]
        last = max((order[o] for o in owners if o in order), default=-1)
        # The last module holding a clustered tensor counts too: with only its bias
        # clustered (the seed's "biases at 1"), its weight is the last layer to train.
        chosen = [n for n in unclustered if order.get(n.rpartition(".")[0], -1) >= last]
    else:
        chosen = _select(model, trainable.selector, unclustered, example_input)
    if not chosen:
        raise QretrainError(
            f"trainable={str(trainable)!r} selects no unclustered parameter of this model; "
            "nothing could be retrained (try 'unclustered')"
        )
    return chosen


def _select(model: nn.Module, selector: Selector, candidates: list[str],
            example_input) -> list[str]:  # fmt: skip
    infos = {i.name: i for i in describe_tensors(model, example_input)}
    chosen = []
    for name in candidates:
        info = infos[name]
        module = model.get_submodule(info.module_name) if info.module_name else model
        if info.kind is not None and selector.matches(info, type_names(module)):
            chosen.append(name)
    return chosen


def _module_call_order(model: nn.Module, example_input: torch.Tensor | None) -> dict[str, int]:
    """Module name -> position of its first call, for modules holding parameters."""
    names = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    return {n: i for i, n in enumerate(call_order(model, names, example_input))}
