"""Run a model from any layer onward, reusing what comes before it.

A sweep cell clusters one layer (or block) and needs the model's outputs; every
layer before it computes exactly what the unclustered model computes. ``Stages``
walks the traced forward graph once, front to back: it holds the *frontier* at one
split (the values the rest of the graph reads from before the split, skip
connections included) for every input batch, and runs only the rest per cell.
Moving the split forward runs just the segment in between, so the whole sweep pays
one forward pass for the prefixes and holds one frontier at a time.

Frontiers are kept per input batch, so values that are not batch tensors (fx turns
``x.size(0)`` into a plain int) are kept as they are: they depend on shapes, never
on weights. Models fx cannot trace run whole for every cell.
"""

from __future__ import annotations

import logging

import torch
from torch import fx, nn

logger = logging.getLogger(__name__)


class Stages:
    """Frontier values over fixed input batches at a split that only moves forward."""

    def __init__(self, model: nn.Module, batches: list[torch.Tensor]):
        """batches: the inputs, each (B, ...), in the model's device and dtype."""
        self.model = model
        self._graph = _trace(model)
        self._nodes = list(self._graph.graph.nodes) if self._graph is not None else []
        self._position = {n: i for i, n in enumerate(self._nodes)}
        self._boundary = sum(1 for n in self._nodes if n.op == "placeholder")
        self._values = [[x] for x in batches]  # per batch, values of the frontier
        self._suffixes: dict[int, nn.Module] = {}

    def boundary_of(self, modules: set[str]) -> int:
        """Graph index of the first node that calls one of ``modules`` or reads their
        tensors: the latest split that leaves all of them after it."""
        prefixes = tuple(m + "." for m in modules)
        for i, n in enumerate(self._nodes):
            if n.op == "call_module" and (n.target in modules or n.target.startswith(prefixes)):
                return i
            if n.op == "get_attr" and n.target.startswith(prefixes):
                return i
        return self._boundary  # never called: whatever runs from here is correct

    @torch.no_grad()
    def advance(self, boundary: int) -> None:
        """Move the split forward to ``boundary``, computing the segment in between
        with the model as it is now (so: unclustered). A boundary behind the split,
        or any boundary of an untraced model, leaves it where it is."""
        if self._graph is None or boundary <= self._boundary:
            return
        segment = self._subgraph(self._boundary, boundary)
        self._values = [list(segment(*values)) for values in self._values]
        self._boundary = boundary

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        """Logits (N, classes) float32 CPU of the model as it is now, rerun from the split."""
        if self._graph is None:
            return torch.cat([self.model(*values).float().cpu() for values in self._values])
        suffix = self._suffixes.get(self._boundary)
        if suffix is None:
            suffix = self._suffixes[self._boundary] = self._subgraph(self._boundary, None)
        return torch.cat([suffix(*values).float().cpu() for values in self._values])

    def _frontier(self, boundary: int) -> list[fx.Node]:
        """Values computed before ``boundary`` that nodes at or after it read. Parameter
        reads (get_attr) never are: they are re-read, so a changed tensor is seen."""
        return [
            n
            for n in self._nodes[:boundary]
            if n.op != "get_attr" and any(self._position[u] >= boundary for u in n.users)
        ]

    def _subgraph(self, start: int, stop: int | None) -> fx.GraphModule:
        """Nodes [start, stop) reading the frontier at start; returns the frontier at
        stop as a tuple, or the model's output when stop is None."""
        end = len(self._nodes) if stop is None else stop
        graph, env = fx.Graph(), {}
        for i, n in enumerate(self._frontier(start)):
            env[n] = graph.placeholder(f"frontier_{i}")
        for n in self._nodes[:start]:  # parameter reads the segment needs
            if n.op == "get_attr" and any(start <= self._position[u] < end for u in n.users):
                env[n] = graph.node_copy(n, lambda a: env[a])
        for n in self._nodes[start:end]:
            env[n] = graph.node_copy(n, lambda a: env[a])
        if stop is not None:
            graph.output(tuple(env[n] for n in self._frontier(stop)))
        return fx.GraphModule(self._graph, graph)


def _trace(model: nn.Module) -> fx.GraphModule | None:
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # fx raises many types for untraceable code
        logger.warning("cannot trace %s (%s): every sweep cell runs the whole model",
                       type(model).__name__, e)  # fmt: skip
        return None
