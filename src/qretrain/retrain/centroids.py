"""Codebook fine-tuning: train clustered tensors' centroid values, never their indices.

Each clustered weight receives its usual gradient; the gradient of a centroid is
the sum over the weights assigned to it (trained quantization, as in Deep
Compression). After each step the weights are rewritten from their codebooks, so
they keep at most k distinct values and the file keeps its size. The indices stay
fixed here; ``retrain.rounding`` may choose new ones (``flat_indices``), which the
state and ``write_back`` carry.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from qretrain.cluster.state import clusters_of
from qretrain.cluster.tensor import ClusteredTensor, lookup, scatter_sum
from qretrain.errors import QretrainFileError
from qretrain.models.layers import get_tensor


class CentroidTuner:
    def __init__(self, model: nn.Module):
        self.model = model
        # Buffers (batch-norm running statistics) are not trained, so not tuned either.
        self.clusters = {
            n: c
            for n, c in clusters_of(model).items()
            if isinstance(get_tensor(model, n), nn.Parameter)
        }
        self.names = list(self.clusters)
        self.codebooks = {
            n: nn.Parameter(c.codebook.clone().to(get_tensor(model, n).device))
            for n, c in self.clusters.items()
        }
        # (G, N) long: the indices each tensor was clustered with, and those in use
        # (N: the tensor's values per row, or its pairs)
        self.clustered_indices = {
            n: c.indices.reshape(c.codebook.shape[0], -1).long().to(get_tensor(model, n).device)
            for n, c in self.clusters.items()
        }
        self.flat_indices = dict(self.clustered_indices)  # retrain.rounding may replace them

    def parameters(self) -> list[nn.Parameter]:
        return list(self.codebooks.values())

    def collect_grads(self, only: list[str] | None = None) -> None:
        """Centroid gradient = sum of its members' weight gradients (G, K); ``only``:
        these tensors' codebooks (the block being trained), else all."""
        for name in self.names if only is None else only:
            codebook = self.codebooks[name]
            weight = get_tensor(self.model, name)
            if weight.grad is None:
                codebook.grad = None
                continue
            points = self.clusters[name].points(weight.grad)
            codebook.grad = scatter_sum(codebook, self.flat_indices[name], points)
            weight.grad = None

    @torch.no_grad()
    def apply(self, only: list[str] | None = None) -> None:
        """Rewrite every clustered weight (or ``only`` these) from its codebook."""
        for name in self.names if only is None else only:
            values = lookup(self.codebooks[name], self.flat_indices[name])
            get_tensor(self.model, name).copy_(self.clusters[name].from_points(values))

    def state(self) -> dict[str, torch.Tensor]:
        """Codebooks, and the indices of tensors whose assignments changed (most keep
        theirs: no copy of every index in each checkpoint and guard snapshot)."""
        state = {f"{n}::codebook": c.detach().clone() for n, c in self.codebooks.items()}
        for name, index in self.flat_indices.items():
            if not torch.equal(index, self.clustered_indices[name]):
                state[f"{name}::indices"] = index.to(torch.uint8).cpu()
        return state

    @torch.no_grad()
    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, codebook in self.codebooks.items():
            if f"{name}::codebook" in state:
                codebook.copy_(state[f"{name}::codebook"])
            saved = state.get(f"{name}::indices")
            self.flat_indices[name] = (self.clustered_indices[name] if saved is None
                                       else self._checked(name, saved))  # fmt: skip
        self.apply()

    def _checked(self, name: str, indices: torch.Tensor) -> torch.Tensor:
        """Saved indices of ``name``, (G, N) long, refused unless each is in 0 .. its
        row's size - 1."""
        shape = self.flat_indices[name].shape
        sizes = self.clusters[name].sizes.to(self.flat_indices[name].device)
        indices = indices.long().to(sizes.device)
        if (indices.numel() != shape.numel() or (indices < 0).any()
                or (indices.reshape(shape) >= sizes[:, None]).any()):  # fmt: skip
            raise QretrainFileError(
                f"saved indices of {name!r} do not fit its codebook (expected {shape.numel()} "
                "indices, each from 0 to below its row's size); remove the checkpoint to start "
                "fresh"
            )
        return indices.reshape(shape)

    def write_back(self) -> None:
        """Store the tuned codebooks in the model's clustering, sorted again."""
        clusters = clusters_of(self.model)
        for name, codebook in self.codebooks.items():
            clusters[name] = _resorted(self.clusters[name], codebook.detach().cpu(),
                                       self.flat_indices[name].cpu())  # fmt: skip


def _resorted(old: ClusteredTensor, codebook: torch.Tensor,
              indices: torch.Tensor) -> ClusteredTensor:  # fmt: skip
    """Rows sorted ascending (used entries only, padding repeats the last), ``indices``
    (G, N) remapped; a codebook of pairs keeps its order."""
    codebook = codebook.clone()
    indices = indices.long().clone()
    if codebook.dim() == 3:
        return replace(old, codebook=codebook, indices=indices.to(torch.uint8).reshape(
            old.indices.shape))  # fmt: skip
    for g, size in enumerate(old.sizes.tolist()):
        values, order = codebook[g, :size].sort()
        remap = torch.empty(size, dtype=torch.long)
        remap[order] = torch.arange(size)
        codebook[g, :size] = values
        codebook[g, size:] = values[-1]
        indices[g] = remap[indices[g]]
    return ClusteredTensor(
        codebook=codebook,
        sizes=old.sizes.clone(),
        indices=indices.to(torch.uint8).reshape(old.shape),
        k=old.k,
        method=old.method,
        granularity=old.granularity,
        sq_error=old.sq_error,
    )
