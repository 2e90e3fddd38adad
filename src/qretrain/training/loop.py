"""Supervised training of a classifier: the loop the reference teachers use.

Plain cross-entropy with AdamW and a cosine schedule, optional light augmentation
for 28x28 images (random 2-pixel shifts and horizontal flips). Deterministic for a
seed on the CPU. Conventional retraining (labels) builds on the same pieces.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from qretrain.errors import QretrainError
from qretrain.progress import Progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0
    augment: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise QretrainError(f"epochs, batch_size and lr must be positive; got {self}")


@dataclass
class TrainHistory:
    loss: list[float] = field(default_factory=list)  # mean training loss per epoch
    seconds: float = 0.0
    samples_per_second: float = 0.0


def shift_and_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """x (N, C, H, W): each image shifted by up to ``pad`` pixels and flipped with p=0.5."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    out = torch.empty_like(x)
    for i, (top, left) in enumerate(zip(dy.tolist(), dx.tolist())):
        out[i] = padded[i, :, top : top + h, left : left + w]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def train_classifier(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig = TrainConfig(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TrainHistory:
    """Train ``model`` in place on labeled ``data`` (items (x, y)) with cross-entropy."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=generator,
                        drop_last=True)  # fmt: skip
    model.to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), config.lr, weight_decay=config.weight_decay)
    total_steps = config.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))
    )
    history = TrainHistory()
    start = time.perf_counter()
    for epoch in range(config.epochs):
        running, batches = 0.0, 0
        bar = Progress(f"epoch {epoch + 1}/{config.epochs}", len(loader), "batches",
                       enabled=progress)  # fmt: skip
        for x, y in loader:
            if config.augment:
                x = shift_and_flip(x, generator)
            x = x.to(device, memory_format=torch.channels_last)
            loss = nn.functional.cross_entropy(model(x), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.item()
            batches += 1
            bar.note(f"loss {running / batches:.4f}")
            bar.update()
        bar.close()
        history.loss.append(running / max(batches, 1))
        logger.info("epoch %d: loss %.4f", epoch + 1, history.loss[-1])
    history.seconds = time.perf_counter() - start
    history.samples_per_second = config.epochs * len(loader) * config.batch_size / history.seconds
    model.eval()
    return history
