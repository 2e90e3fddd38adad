"""Retraining in several processes under ``torchrun``: DistributedDataParallel.

Each process caches only its own shard of the data (image i goes to rank
i % world_size, every shard cut to the same length so that all ranks take the same
number of steps), shuffles it with the run's per-epoch seed, and trains the same
trainable part wrapped in DDP, which averages gradients across ranks: the models stay
identical, and the teacher still runs once per input over all processes together.
Validation data is scored whole on every rank, so every rank's guard keeps the same
epoch. Backends: gloo on the CPU, nccl on GPUs. Nothing here is global state: a
``Ranks`` value travels with the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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

    def shard(self, data: Dataset) -> Dataset:
        """This rank's images: i % world_size == rank, equal lengths on every rank."""
        if not self.several:
            return data
        per_rank = len(data) // self.world_size
        if per_rank == 0:
            raise QretrainError(f"{len(data)} images cannot feed {self.world_size} processes")
        return Subset(data, range(self.rank, per_rank * self.world_size, self.world_size))

    def wrap(self, head: nn.Module, device: torch.device | str) -> nn.Module:
        """DDP around the trainable part; batch-norm buffers are not broadcast since
        they are either frozen or per-rank estimates."""
        if not self.several:
            return head
        ids = [torch.device(device).index] if torch.device(device).type == "cuda" else None
        return DistributedDataParallel(head, device_ids=ids, broadcast_buffers=False)

    def sum(self, *values: float) -> list[float]:
        """Sum of each value over all ranks (for losses and hit counts)."""
        if not self.several:
            return list(values)
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        total = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return total.tolist()

    def barrier(self) -> None:
        if self.several:
            dist.barrier()


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
