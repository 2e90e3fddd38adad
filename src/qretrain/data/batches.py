"""Batches of a dataset, with one clear error for images that cannot share a batch."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from qretrain.errors import QretrainError


def image_batches(data: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
    """``DataLoader(data, batch_size, ...)`` whose batches refuse, in one line, images
    of different shapes: they happen when a model states no input contract to fit
    images to, and torch's own error is a traceback about tensor sizes."""
    return DataLoader(data, batch_size=batch_size, collate_fn=_collate, **kwargs)


def _collate(items: list[tuple[torch.Tensor, int]]) -> Any:
    shapes = {tuple(image.shape) for image, _ in items}
    if len(shapes) > 1:
        a, b = sorted(shapes)[:2]
        raise QretrainError(
            f"images of different sizes ({'x'.join(map(str, a))} and {'x'.join(map(str, b))}) "
            "cannot be batched, and the model states no input contract to fit them to: "
            "state it (--input-size, --mean, --std; Python: contract=...)"
        )
    return default_collate(items)
