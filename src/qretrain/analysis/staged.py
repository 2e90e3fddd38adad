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
on weights. Models fx cannot trace run whole for every cell. The cuts are
``qretrain.models.graph``'s, which retraining's prefix cache uses too.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from qretrain.models.graph import Graph, calls_module

logger = logging.getLogger(__name__)


class Stages:
    """Frontier values over fixed input batches at a split that only moves forward."""

    def __init__(self, model: nn.Module, batches: list[torch.Tensor]):
        """batches: the inputs, each (B, ...), in the model's device and dtype."""
        self.model = model
        self._graph = Graph.trace(model, "rerunning sweep cells from their layer on")
        if self._graph is None:
            logger.warning("%s cannot be traced: every sweep cell runs the whole model",
                           type(model).__name__)  # fmt: skip
        self._boundary = self._graph.inputs if self._graph is not None else 0
        self._values = [[x] for x in batches]  # per batch, values of the frontier
        self._suffixes: dict[int, nn.Module] = {}

    def boundary_of(self, modules: set[str]) -> int:
        """Graph index of the first node that calls one of ``modules`` or reads their
        tensors: the latest split that leaves all of them after it."""
        if self._graph is None:
            return 0
        found = self._graph.first(calls_module(modules))
        return self._boundary if found is None else found  # never called: any split is right

    @torch.no_grad()
    def advance(self, boundary: int) -> None:
        """Move the split forward to ``boundary``, computing the segment in between
        with the model as it is now (so: unclustered). A boundary behind the split,
        or any boundary of an untraced model, leaves it where it is."""
        if self._graph is None or boundary <= self._boundary:
            return
        segment = self._graph.segment(self._boundary, boundary)
        self._values = [list(segment(*values)) for values in self._values]
        self._boundary = boundary

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        """Logits (N, classes) float32 CPU of the model as it is now, rerun from the split."""
        if self._graph is None:
            return torch.cat([self.model(*values).float().cpu() for values in self._values])
        suffix = self._suffixes.get(self._boundary)
        if suffix is None:
            suffix = self._suffixes[self._boundary] = self._graph.segment(self._boundary, None)
        return torch.cat([suffix(*values).float().cpu() for values in self._values])
