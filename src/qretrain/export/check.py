"""Every exported program is run against the model before it is kept.

An exporter records one run of the model's forward (``torch.jit.trace``, the ONNX
exporter) or refuses what it cannot record (``torch.export``). A forward that branches
on tensor values (``if x.mean() > 0:``) records the branch its example input took,
and the export then computes something else for other inputs, silently. So each
export runs on ``PROBES`` seeded random images inside the model's input contract, one
at a time and as one batch, and is kept only if it computes the model's outputs.

The images are what the contract admits: pixels in [0, 1], normalised by its mean
and std. Each has its own brightness range (pixels uniform in [lo, hi]), and one is
black, one white, so that a branch on the image's values goes both ways across them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from qretrain.errors import QretrainError
from qretrain.models.contract import InputContract
from qretrain.models.footprint import batch_within_budget

PROBES = 8
SEED = 0
# An export computes in float32 with other kernels and another operation order: its
# outputs differ from the model's by float rounding, ~1e-6 of their scale. A recorded
# branch, or a wrong graph, differs by the outputs' own scale.
RTOL, ATOL = 1e-3, 1e-4


def probe_inputs(contract: InputContract, count: int = PROBES, seed: int = SEED) -> torch.Tensor:
    """(count, C, size, size) images inside ``contract`` (module docstring)."""
    if count < 2:
        raise QretrainError(f"probe images: count must be at least 2; got {count}")
    g = torch.Generator().manual_seed(seed)
    bounds = torch.rand(count, 2, generator=g).sort(dim=1).values
    bounds[0], bounds[1] = 0.0, 1.0  # a black image, a white one
    lo, hi = (bounds[:, i].reshape(-1, 1, 1, 1) for i in (0, 1))
    pixels = lo + (hi - lo) * torch.rand(count, *contract.shape, generator=g)
    mean = torch.tensor(contract.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(contract.std).reshape(1, -1, 1, 1)
    return (pixels - mean) / std


def check_outputs(what: str, model: nn.Module, run: Callable[[torch.Tensor], np.ndarray],
                  contract: InputContract, *, batched: bool = True) -> None:  # fmt: skip
    """Raise a one-line QretrainError unless ``run`` (the exported program) computes
    ``model``'s outputs on the probe images, each alone and (``batched``: for programs
    that take any batch size) all as one batch, when the batch's activations fit the
    memory budget (``models.footprint``)."""
    images = probe_inputs(contract)
    # All as one batch only when its activations fit the budget: a file states its
    # contract, and eight 1024-px images through a wide net take gigabytes.
    batched = batched and batch_within_budget(model, contract.shape, len(images),
                                              what) == len(images)  # fmt: skip
    batches = [images[i : i + 1] for i in range(len(images))] + ([images] if batched else [])
    differ, worst, scale = 0, 0.0, 0.0
    for batch in batches:
        try:
            with torch.no_grad():
                want = model(batch).float().numpy()
                got = np.asarray(run(batch), dtype=np.float32)
        except Exception as e:  # the exported program's runtime may raise anything
            raise QretrainError(f"{what} refused: the exported program fails on a batch of "
                                f"{len(batch)} ({one_line(e)}); nothing was written") from e  # fmt: skip
        error = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        size = float(np.abs(want).max())
        worst, scale = max(worst, error), max(scale, size)
        differ += not error <= ATOL + RTOL * size  # NaN differs too
    if differ:
        raise QretrainError(
            f"{what} refused: in {differ} of {len(batches)} runs on random images of the "
            f"model's contract ({'each alone, then all as one batch' if batched else 'one at a time'}"
            f") it computes other outputs than the model (difference up to {worst:.3g}, "
            f"outputs up to {scale:.3g}); a forward that branches on tensor values (a Python "
            "`if` on a tensor) is exported with one branch fixed: write the branch with "
            "torch.where, or export safetensors; nothing was written"
        )


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def attention_slow_path() -> Iterator[None]:
    """nn.MultiheadAttention without its fused inference kernel while exporting: in
    eval mode without gradients it calls ``aten::_native_multi_head_attention``, which
    neither ONNX nor Core ML has; its slow path computes the same with stock
    operators (matmul, softmax)."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)
