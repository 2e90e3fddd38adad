"""Several processes under ``torchrun``: which images and which work each one takes,
and the few collectives that keep them in step.

Retraining by output matching (``retrain.loop``) caches only this rank's shard of the
data (image i goes to rank i % world_size, every shard cut to the same length so that
all ranks take the same number of steps), shuffles it with the run's per-epoch seed,
and trains the same trainable part wrapped in DDP, which averages gradients across
ranks. Block-wise reconstruction (``retrain.blocks``) shards the same way without
cutting, walks one global order of all images, and sums each step's gradients
(``sum_grads``), so that it takes the steps one process would. The sweep
(``analysis.sweep``) gives cell i to rank i % world_size and gathers the cells
(``gather``). Every decision (a guard, a kept choice) is taken on values reduced over
all ranks, so every rank takes the same one. Backends: gloo on the CPU, nccl on GPUs.
Nothing here is global state: a ``Ranks`` value travels with the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Subset

from qretrain.errors import QretrainError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world_size`` processes."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise QretrainError(f"rank {self.rank} of world_size {self.world_size} is impossible")
        if self.world_size > 1 and not (dist.is_available() and dist.is_initialized()):
            raise QretrainError(
                f"world_size {self.world_size} needs torch.distributed initialized "
                "(run under torchrun, or call init_from_env first)"
            )

    @property
    def several(self) -> bool:
        return self.world_size > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0

    def shard(self, data: Dataset, *, equal: bool = True) -> Dataset:
        """This rank's images: i % world_size == rank. ``equal``: cut every shard to the
        same length (a rank may then hold one image fewer than it could)."""
        if not self.several:
            return data
        per_rank = len(data) // self.world_size
        if per_rank == 0:
            raise QretrainError(f"{len(data)} images cannot feed {self.world_size} processes; "
                                f"give at least {self.world_size}")  # fmt: skip
        stop = per_rank * self.world_size if equal else len(data)
        return Subset(data, range(self.rank, stop, self.world_size))

    def mine(self, index: torch.Tensor) -> torch.Tensor:
        """Of global image indices ``index`` (n,), the positions in this rank's unequal
        shard (``shard(data, equal=False)``) of those it holds (m,), in their order."""
        if not self.several:
            return index
        return index[index % self.world_size == self.rank] // self.world_size

    def wrap(self, head: nn.Module, device: torch.device | str) -> nn.Module:
        """DDP around the trainable part; batch-norm buffers are not broadcast since
        they are either frozen or per-rank estimates."""
        if not self.several:
            return head
        ids = [torch.device(device).index] if torch.device(device).type == "cuda" else None
        return DistributedDataParallel(head, device_ids=ids, broadcast_buffers=False)

    def sum(self, *values: float) -> list[float]:
        """Sum of each value over all ranks (for losses and hit counts); every rank
        receives the same sums."""
        if not self.several:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=_device())
        dist.all_reduce(total)
        return total.tolist()

    def sum_grads(self, tensors: list[torch.Tensor]) -> None:
        """Sum each tensor's ``.grad`` over all ranks, in one all-reduce (``tensors``: of
        one dtype and device, as a block's parameters are). A rank
        that computed none (no image of the step was its) adds zeros; a tensor no rank
        has a gradient for keeps None, so that Adam skips it as one process would."""
        if not self.several or not tensors:
            return
        parts = [t.grad.reshape(-1) if t.grad is not None else torch.zeros(
            t.numel(), dtype=t.dtype, device=t.device) for t in tensors]  # fmt: skip
        present = torch.tensor([t.grad is not None for t in tensors], dtype=parts[0].dtype,
                               device=parts[0].device)  # fmt: skip
        flat = torch.cat([*parts, present])
        dist.all_reduce(flat)
        sums = flat[: -len(tensors)].split([t.numel() for t in tensors])
        for t, total, seen in zip(tensors, sums, flat[-len(tensors) :].tolist()):
            # empty_like keeps the parameter's layout (channels-last convolutions).
            t.grad = torch.empty_like(t).copy_(total.reshape(t.shape)) if seen else None

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.several:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (picklable), on every rank."""
        if not self.several:
            return value
        box = [value if self.leader else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.several:
            dist.barrier()


def _device() -> str:
    """Where collectives' tensors live: nccl reduces only GPU tensors."""
    return f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"


def init_from_env(device: str) -> tuple[Ranks, str]:
    """Join the process group torchrun describes in the environment, if any.

    Returns this process's Ranks and its device (``cuda`` becomes ``cuda:LOCAL_RANK``).
    Outside torchrun (no WORLD_SIZE, or 1) nothing is initialized.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Ranks(), device
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if on_gpu else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size()), device


@contextmanager
def process_group_from_env(device: str) -> Iterator[tuple[Ranks, str]]:
    """``init_from_env`` for the length of a ``with`` block: this process's Ranks and
    device, and the process group (when one was joined) left when the block ends,
    however it ends."""
    ranks, device = init_from_env(device)
    try:
        yield ranks, device
        if ranks.several:  # gloo aborts a process whose peer tore its connections down
            dist.barrier()  # first ("terminate called without an active exception")
    finally:
        if ranks.several:
            dist.destroy_process_group()
