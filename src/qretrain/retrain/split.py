"""Split a model into a frozen prefix and a trainable suffix, to cache the prefix.

When every trainable parameter lies after a frozen part of the network, that part's
outputs are the same in every epoch: computing them once makes an epoch cost only
the trainable tail. The cut is ``qretrain.models.graph``'s; models fx cannot trace
simply run whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx, nn

from qretrain.models.graph import Graph, reads_parameter


@dataclass(frozen=True)
class PrefixSplit:
    """``prefix(x)`` -> tuple of frontier tensors; ``suffix(*frontier)`` -> logits."""

    prefix: fx.GraphModule
    suffix: fx.GraphModule


def split_before_trainable(model: nn.Module, trainable: set[str]) -> PrefixSplit | None:
    """Split at the first graph node that touches a parameter named in ``trainable``.

    Returns None when fx cannot trace the model, the prefix would be empty, or the raw
    input is needed after the cut (nothing to save).
    """
    graph = Graph.trace(model, "caching a frozen prefix")
    if graph is None:
        return None
    boundary = graph.first(reads_parameter(trainable))
    if boundary is None or not any(n.op not in ("placeholder", "get_attr")
                                   for n in graph.nodes[:boundary]):  # fmt: skip
        return None
    if any(n.op == "placeholder" for n in graph.frontier(boundary)):
        return None
    return PrefixSplit(graph.segment(graph.inputs, boundary), graph.segment(boundary, None))
