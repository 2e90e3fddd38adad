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
        graph, env = fx.Graph(), {}
        for i, n in enumerate(self.frontier(start)):
            env[n] = graph.placeholder(f"frontier_{i}")
        self._copy(graph, env, start, stop)
        if stop is not None:
            graph.output(tuple(env[n] for n in self.frontier(stop)))
        return fx.GraphModule(self.traced, graph)

    def _copy(self, graph: fx.Graph, env: dict, start: int, stop: int | None) -> None:
        """Copy nodes [start, stop) into ``graph`` (the output node only when ``stop``
        is None), with the parameter reads before ``start`` that they use; ``env``
        maps the frontier's nodes to the new graph's inputs and receives the copies."""
        end = len(self.nodes) if stop is None else stop
        for n in self.nodes[:start]:
            if n.op == "get_attr" and any(start <= self._position[u] < end for u in n.users):
                env[n] = graph.node_copy(n, lambda a: env[a])
        for n in self.nodes[start:end]:
            if n.op == "output" and stop is not None:
                continue
            env[n] = graph.node_copy(n, lambda a: env[a])

    def tensor_frontier(self, boundary: int) -> list[fx.Node] | None:
        """The frontier at ``boundary`` without the input's batch size (``x.size(0)``,
        which a segment recomputes from its own input), or None if one of those
        is the input itself."""
        rest = [n for n in self.frontier(boundary) if not _batch_size(n)]
        return None if any(n.op == "placeholder" for n in rest) else rest

    def block(self, start: int, stop: int | None) -> fx.GraphModule:
        """Nodes [start, stop) between two cuts where one tensor crosses
        (``tensor_frontier`` of one node): a module from that tensor to the next cut's
        tensor, or to the model's output when ``stop`` is None. The input's batch
        size, where the model reads it, is taken from the block's own input."""
        if start <= self.inputs:  # the first block reads the model's (one) input
            (crossing,) = [n for n in self.nodes if n.op == "placeholder"]
        else:
            (crossing,) = self.tensor_frontier(start)
        graph = fx.Graph()
        env = {crossing: graph.placeholder("x")}
        for n in self.frontier(start):
            if _batch_size(n):
                env[n] = graph.call_method("size", (env[crossing], 0))
        self._copy(graph, env, start, stop)
        if stop is not None:
            (out,) = self.tensor_frontier(stop)
            graph.output(env[out])
        return fx.GraphModule(self.traced, graph)


def _batch_size(n: fx.Node) -> bool:
    """``x.size(0)`` of the model's input: the batch size."""
    return (n.op == "call_method" and n.target == "size" and len(n.args) == 2
            and getattr(n.args[0], "op", None) == "placeholder" and n.args[1] == 0)  # fmt: skip


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
