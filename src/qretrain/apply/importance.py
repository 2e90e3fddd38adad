"""How much each weight matters to the model's output: for ``sensitive-kmeans``.

The importance of a weight is the diagonal of the Fisher information, E[g^2], with g
the gradient of log p(y | x) with respect to it, for images x of the data and labels
y drawn from the model's own predicted distribution (so no labels are needed, and
the expectation is the true Fisher, not the empirical one). Weighting 1-D k-means by
it minimises the second-order estimate of the loss increase that clustering causes:
the weighting of SqueezeLLM (Kim et al., 2024) and coremltools' SKMPalettizer. Unlike
the layer's input energy alone, it sees what comes after the layer (a batch norm
that scales a channel up makes that channel's weights matter more).

Gradients are taken one image at a time (the Fisher is a sum of per-sample squares),
so the cost is one backward pass per image: a few hundred images suffice.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn
from torch.utils.data import Dataset

from qretrain.data.batches import image_batches
from qretrain.errors import QretrainError
from qretrain.models.layers import get_tensor

logger = logging.getLogger(__name__)
MAX_IMAGES = 256  # images the Fisher is averaged over: more cost time, change little


def fisher_importance(model: nn.Module, data: Dataset, names: list[str], *, seed: int = 0,
                      images: int = MAX_IMAGES,
                      device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:  # fmt: skip
    """name -> diagonal Fisher (the parameter's shape) for each parameter in ``names``,
    over the first ``images`` images of ``data``; labels are drawn from the model's
    outputs with a generator seeded by ``seed``. The model is left as it was."""
    if len(data) == 0:
        raise QretrainError("importance needs data: the dataset holds no images")
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise QretrainError(f"{missing[0]} is not a parameter (a buffer has no gradient): "
                            "sensitive-kmeans applies to trained weights only; use kmeans")  # fmt: skip
    chosen = {n: params[n] for n in names}
    sums = {n: torch.zeros_like(p, dtype=torch.float64, device="cpu") for n, p in chosen.items()}
    flags = {n: p.requires_grad for n, p in params.items()}
    was_training = model.training
    model.eval().to(device)
    for n, p in params.items():
        p.requires_grad_(n in chosen)
    g = torch.Generator().manual_seed(seed)
    start, count = time.perf_counter(), 0
    try:
        for x, _ in image_batches(data, 1):
            if count >= images:
                break
            logits = model(x.to(device)).float()
            label = torch.multinomial(logits.softmax(1).detach().cpu(), 1, generator=g)
            loss = torch.nn.functional.cross_entropy(logits, label.reshape(-1).to(device))
            grads = torch.autograd.grad(loss, list(chosen.values()))
            for n, grad in zip(chosen, grads):
                sums[n] += grad.detach().double().cpu().square()
            count += 1
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
        model.train(was_training)
    logger.info("Fisher importance of %d tensors over %d images in %.1f s", len(names), count,
                time.perf_counter() - start)  # fmt: skip
    return {n: (s / count).to(get_tensor(model, n).dtype) for n, s in sums.items()}
