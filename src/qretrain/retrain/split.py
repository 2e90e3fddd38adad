"""Split a model into a frozen prefix and a trainable suffix, to cache the prefix.

When every trainable parameter lies after a frozen part of the network, that part's
outputs are the same in every epoch: computing them once makes an epoch cost only
the trainable tail. The split uses torch.fx; models fx cannot trace (Python control
flow on tensors) simply run whole.
"""

from __future__ import annotations

import logging

from torch import fx, nn

logger = logging.getLogger(__name__)


class PrefixSplit:
    """``prefix(x)`` -> tuple of frontier tensors; ``suffix(*frontier)`` -> logits.

    The frontier holds every prefix value the suffix uses, skip connections included.
    """

    def __init__(self, prefix: fx.GraphModule, suffix: fx.GraphModule, frontier: int):
        self.prefix, self.suffix, self.frontier_size = prefix, suffix, frontier


def split_before_trainable(model: nn.Module, trainable: set[str]) -> PrefixSplit | None:
    """Split at the first graph node that touches a parameter named in ``trainable``.

    Returns None when fx cannot trace the model or the prefix would be empty.
    """
    try:
        traced = fx.symbolic_trace(model)
    except Exception as e:  # fx raises many types for untraceable code
        logger.info("cannot split %s for caching (%s); it runs whole", type(model).__name__, e)
        return None
    nodes = list(traced.graph.nodes)
    boundary = next((i for i, n in enumerate(nodes) if _touches(n, traced, trainable)), None)
    if boundary is None:
        return None
    prefix_nodes = [n for n in nodes[:boundary] if n.op != "output"]
    if not any(n.op != "placeholder" for n in prefix_nodes):
        return None
    inside = set(prefix_nodes)
    frontier = [n for n in prefix_nodes if any(u not in inside for u in n.users)]
    if any(n.op == "placeholder" for n in frontier):
        return None  # the raw input is needed later: nothing to save
    prefix_graph, env = fx.Graph(), {}
    for n in prefix_nodes:
        env[n] = prefix_graph.node_copy(n, lambda a: env[a])
    prefix_graph.output(tuple(env[n] for n in frontier))
    suffix_graph, env = fx.Graph(), {}
    for i, n in enumerate(frontier):
        env[n] = suffix_graph.placeholder(f"frontier_{i}")
    for n in nodes[boundary:]:
        env[n] = suffix_graph.node_copy(n, lambda a: env[a])
    prefix = fx.GraphModule(traced, prefix_graph)
    suffix = fx.GraphModule(traced, suffix_graph)
    return PrefixSplit(prefix, suffix, len(frontier))


def _touches(node: fx.Node, traced: fx.GraphModule, trainable: set[str]) -> bool:
    if node.op == "call_module":
        prefix = node.target + "."
        return any(name.startswith(prefix) for name in trainable)
    if node.op == "get_attr":
        return node.target in trainable
    return False
