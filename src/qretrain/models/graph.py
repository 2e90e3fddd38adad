"""A model's traced forward graph, cut into segments: the one splitter.

The sweep reruns a model from the layer it clustered onward (``analysis.staged``);
retraining caches the frozen prefix before the first trainable parameter
(``retrain.split``). Both cut the same way: a *boundary* is a node index; the
*frontier* at a boundary is every value computed before it that a node at or after
it reads (skip connections included); a *segment* runs the nodes between two
boundaries from the first frontier to the second. Parameter reads (``get_attr``)
never enter a frontier: each segment re-reads them, so a changed tensor is seen.
Models fx cannot trace (Python control flow on tensors) have no graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch import fx, nn

logger = logging.getLogger(__name__)


class Graph:
    """The traced graph of one model, and cuts of it."""

    def __init__(self, traced: fx.GraphModule):
        self.traced = traced
        self.nodes = list(traced.graph.nodes)
        self._position = {n: i for i, n in enumerate(self.nodes)}
        self.inputs = sum(1 for n in self.nodes if n.op == "placeholder")  # first boundary

    @classmethod
    def trace(cls, model: nn.Module, why: str) -> Graph | None:
        """The graph, or None (logged with ``why`` the caller wanted it) if fx fails."""
        try:
            return cls(fx.symbolic_trace(model))
        except Exception as e:  # fx raises many types for untraceable code
            logger.info("cannot trace %s for %s (%s): it runs whole", type(model).__name__,
                        why, e)  # fmt: skip
            return None

    def first(self, touches: Callable[[fx.Node], bool]) -> int | None:
        """Index of the first node for which ``touches`` holds, or None."""
        return next((i for i, n in enumerate(self.nodes) if touches(n)), None)

    def frontier(self, boundary: int) -> list[fx.Node]:
        """Values computed before ``boundary`` that nodes at or after it read."""
        return [
            n
            for n in self.nodes[:boundary]
            if n.op != "get_attr" and any(self._position[u] >= boundary for u in n.users)
        ]

    def segment(self, start: int, stop: int | None) -> fx.GraphModule:
        """Nodes [start, stop) reading the frontier at ``start``; returns the frontier
        at ``stop`` as a tuple, or the model's output when ``stop`` is None."""
        end = len(self.nodes) if stop is None else stop
        graph, env = fx.Graph(), {}
        for i, n in enumerate(self.frontier(start)):
            env[n] = graph.placeholder(f"frontier_{i}")
        for n in self.nodes[:start]:  # parameter reads the segment needs
            if n.op == "get_attr" and any(start <= self._position[u] < end for u in n.users):
                env[n] = graph.node_copy(n, lambda a: env[a])
        for n in self.nodes[start:end]:
            if n.op == "output" and stop is not None:
                continue
            env[n] = graph.node_copy(n, lambda a: env[a])
        if stop is not None:
            graph.output(tuple(env[n] for n in self.frontier(stop)))
        return fx.GraphModule(self.traced, graph)


def calls_module(modules: set[str]) -> Callable[[fx.Node], bool]:
    """A ``touches`` test: the node calls one of ``modules`` (or a submodule) or reads
    one of their tensors."""
    prefixes = tuple(m + "." for m in modules)

    def touches(n: fx.Node) -> bool:
        if n.op == "call_module":
            return n.target in modules or n.target.startswith(prefixes)
        return n.op == "get_attr" and n.target.startswith(prefixes)

    return touches


def reads_parameter(names: set[str]) -> Callable[[fx.Node], bool]:
    """A ``touches`` test: the node calls a module owning one of the parameters
    ``names`` or reads one of them."""

    def touches(n: fx.Node) -> bool:
        if n.op == "call_module":
            prefix = n.target + "."
            return any(name.startswith(prefix) for name in names)
        return n.op == "get_attr" and n.target in names

    return touches
