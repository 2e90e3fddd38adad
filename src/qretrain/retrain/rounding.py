"""Learned assignments: each clustered weight chooses between its two neighbouring
centroids by what the block's output needs (AdaRound for codebooks).

k-means gives every weight its *nearest* centroid, which is best for the weight but
not for the block's output. Here each weight whose original value ``w0`` lies between
two used centroids ``c_lo < c_hi`` of its row becomes, while its block trains,

    w = c_lo + h(V) * (c_hi - c_lo),   h(V) = clamp(sigmoid(V) * (ZETA - GAMMA) + GAMMA, 0, 1)

with ``V`` initialised so that ``w = w0`` (AdaRound's rectified sigmoid, Nagel et al.,
ICML 2020). The block's loss gains ``lambda * sum(1 - |2h - 1| ** beta) / D`` (D: the
block's output values per image, so the balance with the mean squared error is
BRECQ's, Li et al., ICLR 2021), with ``beta`` decayed from BETA[0] to BETA[1] after
the first WARMUP share of the block's steps: the term is 0 only at h in {0, 1} and
pushes every weight to one side by the end. Then each weight takes ``c_hi`` where
h >= 1/2 and ``c_lo`` otherwise: still one of the row's used values, so a tensor keeps
at most k values and its file its size. Weights below the row's smallest centroid or
above its largest (and those whose index is neither neighbour) keep their index.

A codebook of pairs (granularity ``pairs``) has no order: each pair chooses between
its centroid ``c_lo`` and the pair nearest to its original values after it, ``c_hi``,
and moves along the line between them, ``h`` starting at the original pair's
projection onto that line. Counts of free and moved assignments in the record are then
of pairs, and the rounding term has one ``h`` per pair (half as many as weights).

Centroid values train with the assignments (they reach the codebooks through the same
soft weights); ``CentroidTuner`` holds both. The neighbours come from the clustering the
block started with (``tuner.clusters``), so a resumed run finds the same ones.

A block has a few hundred steps, not AdaRound's 20,000. At AdaRound's lambda of 0.01
many h are still between 0 and 1 after them: the soft weights stay near the original
ones, the soft passes fit a block that is hardly clustered, and rounding at the end
undoes much of what they learned (EfficientNet-Lite0 at 8x: each block's error after
rounding 1.1 to 80 times its last soft pass's, 2.2 times at the median). The default
lambda is therefore 10 (``RetrainConfig.rounding_lambda``), a thousand times
AdaRound's: the soft passes end near the hard values they will take (the blocks'
error after training 8-42% lower; ``docs/BENCHMARKS.md``). ``retrain.blocks`` learns
the assignments in all passes but the last, takes the choices only where they
reconstruct the block's output better than the nearest centroids do, and trains the
last pass with the assignments fixed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qretrain.cluster.tensor import PAIR_CHUNK, lookup
from qretrain.errors import QretrainFileError
from qretrain.models.layers import get_tensor
from qretrain.retrain.centroids import CentroidTuner

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (AdaRound)
BETA = (20.0, 2.0)  # the rounding term's exponent, from soft to hard
WARMUP = 0.2  # share of a block's steps before the rounding term starts
LR = 0.1  # Adam's step for V: a block trains for ~100 steps, not AdaRound's 20,000


class LearnedAssignments:
    """The soft assignments of one block's clustered tensors ``names``.

    ``originals``: each tensor's unclustered values (the teacher's), any shape with the
    tensor's element count. ``steps``: the block's optimizer steps in all, for the
    schedule of ``beta``. ``per_image``: D above.
    """

    def __init__(self, tuner: CentroidTuner, names: list[str],
                 originals: dict[str, torch.Tensor], steps: int, per_image: int,
                 weight: float):  # fmt: skip
        """``weight``: the rounding term's (``RetrainConfig.rounding_lambda``)."""
        self.tuner, self.names, self.weight = tuner, list(names), weight
        self.steps, self.per_image, self.step = steps, per_image, 0
        self.lo: dict[str, torch.Tensor] = {}
        self.hi: dict[str, torch.Tensor] = {}
        self.free: dict[str, torch.Tensor] = {}
        self.v: dict[str, nn.Parameter] = {}
        for name in self.names:
            clustered = tuner.clusters[name]
            device = tuner.codebooks[name].device
            codebook = clustered.codebook.to(device)
            index = tuner.clustered_indices[name]
            w0 = clustered.points(originals[name].detach().reshape(clustered.shape).to(codebook))
            if clustered.vector > 1:  # a pair: its centroid, or the next nearest to it
                lo, hi = index, _second_nearest(codebook, w0, index)
                # (a pair equal to its centroid, after tuning, has no line to move along)
                free = (lo != hi) & (lookup(codebook, lo) != lookup(codebook, hi)).any(-1)
            else:
                lo, hi = _neighbours(codebook, clustered.sizes.to(device), w0)
                free = (lo != hi) & ((index == lo) | (index == hi))
            c_lo, c_hi = lookup(codebook, lo), lookup(codebook, hi)
            h0 = (_along(w0 - c_lo, c_hi - c_lo, free)).clamp(0.01, 0.99)
            v = -torch.log((ZETA - GAMMA) / (h0 - GAMMA) - 1)
            self.lo[name] = torch.where(free, lo, index)
            self.hi[name] = torch.where(free, hi, index)
            self.free[name] = free
            self.v[name] = nn.Parameter(torch.where(free, v, 0.0))

    def parameters(self) -> list[nn.Parameter]:
        return list(self.v.values())

    def _h(self, name: str) -> torch.Tensor:
        h = (torch.sigmoid(self.v[name]) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
        return torch.where(self.free[name], h, 0.0)

    def _soft(self, name: str) -> torch.Tensor:
        """The tensor's soft values, (G, N) or (1, N, 2) pairs, differentiable in V and
        the codebook."""
        codebook = self.tuner.codebooks[name]
        c_lo, c_hi = lookup(codebook, self.lo[name]), lookup(codebook, self.hi[name])
        h = self._h(name)
        return c_lo + (h.unsqueeze(-1) if codebook.dim() == 3 else h) * (c_hi - c_lo)

    def beta(self) -> float | None:
        """The rounding term's exponent at the current step; None during warm-up."""
        start = WARMUP * self.steps
        if self.step < start:
            return None
        share = (self.step - start) / max(self.steps - start, 1)
        return BETA[1] + (BETA[0] - BETA[1]) * max(0.0, 1.0 - share)

    @torch.no_grad()
    def write(self) -> None:
        """Put the soft values into the model's weights (before a forward pass)."""
        for name in self.names:
            weight = get_tensor(self.tuner.model, name)
            weight.copy_(self.tuner.clusters[name].from_points(self._soft(name)))

    def collect_grads(self) -> None:
        """Turn the weights' gradients into V's and the codebooks', adding the rounding
        term's (after warm-up)."""
        beta, surrogate = self.beta(), 0.0
        for name in self.names:
            weight = get_tensor(self.tuner.model, name)
            self.tuner.codebooks[name].grad = None
            if weight.grad is not None:
                grad = self.tuner.clusters[name].points(weight.grad)
                surrogate = surrogate + (self._soft(name) * grad).sum()
                weight.grad = None
            if beta is not None:
                h = self._h(name)[self.free[name]]
                term = self.weight * (1 - (2 * h - 1).abs().pow(beta)).sum() / self.per_image
                surrogate = surrogate + term
        if isinstance(surrogate, torch.Tensor):
            surrogate.backward()
        self.step += 1

    @torch.no_grad()
    def use(self, learned: bool) -> int:
        """Give each weight its learned centroid (h >= 1/2: ``c_hi``), or its nearest
        one, in the tuner's indices and the model's weights; returns how many weights
        the learned choice moves off their nearest centroid."""
        moved = 0
        for name in self.names:
            index = torch.where(self._h(name) >= 0.5, self.hi[name], self.lo[name])
            nearest = self.tuner.clustered_indices[name]
            moved += int((index != nearest).sum())
            self.tuner.flat_indices[name] = index if learned else nearest
        self.tuner.apply(self.names)
        return moved

    def free_count(self) -> int:
        return sum(int(f.sum()) for f in self.free.values())

    def state(self) -> dict:
        return {"step": self.step, "v": {n: v.detach().clone() for n, v in self.v.items()}}

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        """Restore ``state()``; refuses one that does not fit these tensors."""
        saved = state.get("v", {})
        step = state.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= self.steps:
            raise QretrainFileError(
                f"the checkpoint's learned assignments are at step {state.get('step')!r}, "
                f"expected 0 .. {self.steps}; remove the checkpoint to start fresh"
            )
        for name, v in self.v.items():
            if name not in saved or saved[name].shape != v.shape:
                raise QretrainFileError(
                    f"the checkpoint's learned assignments of {name!r} are missing or of "
                    "another shape; remove the checkpoint to start fresh"
                )
        self.step = state["step"]
        for name, v in self.v.items():
            v.copy_(saved[name])


def _along(offset: torch.Tensor, step: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """How far along ``step`` (from c_lo to c_hi) ``offset`` (from c_lo) lies: values
    (G, N), or pairs (G, N, 2) projected onto the line through both centroids."""
    if offset.dim() == 2:
        return offset / torch.where(free, step, 1.0)
    return (offset * step).sum(-1) / torch.where(free, step.square().sum(-1), 1.0)


def _second_nearest(codebook: torch.Tensor, w0: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per pair of ``w0`` (1, N, 2), the slot of the nearest pair of ``codebook``
    (1, K, 2) other than its own ``index`` (1, N); its own where K = 1."""
    if codebook.shape[1] == 1:
        return index
    out = torch.empty_like(index)
    for at in range(0, index.shape[1], PAIR_CHUNK):
        distance = (w0[0, at : at + PAIR_CHUNK, None, :] - codebook[0, None]).square().sum(-1)
        distance.scatter_(1, index[0, at : at + PAIR_CHUNK, None], math.inf)
        out[0, at : at + PAIR_CHUNK] = distance.argmin(1)
    return out


def _neighbours(codebook: torch.Tensor, sizes: torch.Tensor, w0: torch.Tensor):
    """Per value of ``w0`` (G, N), the codebook slots of the largest used centroid
    <= it and the smallest >= it ((G, N) each; the same slot at either end)."""
    used = torch.arange(codebook.shape[1], device=codebook.device)[None, :] < sizes[:, None]
    values, order = torch.where(used, codebook, math.inf).sort(dim=1)
    position = torch.searchsorted(values, w0.contiguous())
    last = (sizes - 1)[:, None]
    hi = torch.minimum(position, last)
    lo = torch.minimum((position - 1).clamp(min=0), last)
    return order.gather(1, lo), order.gather(1, hi)
