"""Data-free inputs made from the teacher alone: batch-norm statistics matching.

A trained network's batch-norm layers remember the mean and variance of what they
saw in training. Inputs optimised from noise until every batch-norm layer's batch
statistics match those running statistics look, to the network, like its training
data (ZeroQ, Cai et al., CVPR 2020; DeepInversion, Yin et al., CVPR 2020). For each
batch: x ~ N(0, 1) in the model's input space, then ``steps`` Adam steps (lr
``LR``) on the sum over batch-norm layers of the squared distance between the
batch's per-channel mean and standard deviation of the layer's input and the
layer's running mean and standard deviation. The model runs in eval mode, its
parameters untouched.

The images are cached on disk (``synthetic/`` in qretrain's cache), keyed by the
teacher's fingerprint, the count, the seed and the steps, written atomically and
read back with ``numpy.load(allow_pickle=False)``.
"""

from __future__ import annotations

import io
import logging
import time

import numpy as np
import torch
from torch import nn

from qretrain._cache import cache_dir
from qretrain.data.sets import TensorImageSet
from qretrain.errors import QretrainError
from qretrain.models.fingerprint import model_fingerprint
from qretrain.models.specs import get_arch
from qretrain.storage.atomic import atomic_path

logger = logging.getLogger(__name__)
LR = 0.1
BATCH = 32
DEFAULT_STEPS = 200


def synthesize(teacher: nn.Module, n: int, seed: int = 0, steps: int | None = None,
               device: str | torch.device = "cpu") -> TensorImageSet:  # fmt: skip
    """``n`` inputs whose batch-norm statistics in ``teacher`` match its running ones
    (see the module doc); unlabeled, already in the model's input space. ``steps``:
    Adam steps per batch (default ``DEFAULT_STEPS``)."""
    steps = DEFAULT_STEPS if steps is None else steps
    if not isinstance(n, int) or n < 1:
        raise QretrainError(f"synthetic data needs at least one image; got {n!r}")
    if not isinstance(steps, int) or steps < 1:
        raise QretrainError(f"synthetic data needs steps >= 1; got {steps!r}")
    norms = [m for m in teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats and m.running_mean is not None]  # fmt: skip
    if not norms:
        raise QretrainError(
            f"synthetic data matches batch-norm statistics, and {type(teacher).__name__} has "
            "no batch-norm layer with running statistics: retrain on real images instead"
        )
    arch = get_arch(teacher)
    example = arch.example_input() if arch is not None else None
    if example is None:
        raise QretrainError("synthetic data needs the model's input contract (its image size)")
    path = cache_dir("synthetic") / (
        f"{model_fingerprint(teacher)[:16]}-n{n}-s{seed}-t{steps}.npy")  # fmt: skip
    if path.exists():
        images = np.load(path, allow_pickle=False)
        if images.shape == (n, *example.shape[1:]) and images.dtype == np.float32:
            return _dataset(images, n, seed, steps)
        logger.warning("ignoring %s: not %d images of %s", path, n, tuple(example.shape[1:]))
    start = time.perf_counter()
    images = np.concatenate([
        _batch(teacher, norms, min(BATCH, n - at), example.shape[1:], seed * 1_000_003 + at,
               steps, device)
        for at in range(0, n, BATCH)
    ])  # fmt: skip
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    logger.info("synthesized %d images in %.0f s (cached in %s)", n, time.perf_counter() - start,
                path)  # fmt: skip
    return _dataset(images, n, seed, steps)


def _batch(teacher: nn.Module, norms: list[nn.Module], size: int, shape, seed: int, steps: int,
           device) -> np.ndarray:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, *shape, generator=g).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=LR)
    stats: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def hook(module, inputs, output):
        value = inputs[0]
        dims = [d for d in range(value.dim()) if d != 1]
        stats.append(
            (module, value.mean(dims), value.var(dims, unbiased=False).add(module.eps).sqrt())
        )

    was_training = teacher.training
    teacher.eval().to(device)
    frozen = [p.requires_grad for p in teacher.parameters()]
    for p in teacher.parameters():
        p.requires_grad_(False)
    handles = [m.register_forward_hook(hook) for m in norms]
    try:
        for step in range(steps):
            stats.clear()
            teacher(x)
            loss = sum(((mean - m.running_mean) ** 2).sum()
                       + ((std - (m.running_var + m.eps).sqrt()) ** 2).sum()
                       for m, mean, std in stats)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step == 0 or step + 1 == steps:
                logger.info("synthetic batch (seed %d), step %d/%d: statistics loss %.4g", seed,
                            step + 1, steps, float(loss.detach()))  # fmt: skip
    finally:
        for h in handles:
            h.remove()
        for p, flag in zip(teacher.parameters(), frozen):
            p.requires_grad_(flag)
        teacher.train(was_training)
    return x.detach().cpu().float().numpy()


def _dataset(images: np.ndarray, n: int, seed: int, steps: int) -> TensorImageSet:
    return TensorImageSet(f"synthetic:{n} (seed {seed}, {steps} steps)", None, None,
                          images=torch.from_numpy(images))  # fmt: skip
