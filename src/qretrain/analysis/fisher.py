"""The fast signal: each cell's KL predicted from the Fisher information, without
running the model once per cell.

Clustering moves a layer's tensor by dW. At the original weights the mean KL from the
original model's outputs to the moved model's is zero and flat, so to second order it
is ``0.5 * dW^T F dW``, F the Fisher information of the model's output distribution
over the images. With labels y drawn from the model's own predictions (no labels
needed), ``F = E[g g^T]`` for g the gradient of ``log p(y | x)``, so

    predicted KL = 0.5 * E[(g . dW)^2] = 0.5 * E[(G . dY)^2]

with G the gradient of ``log p(y | x)`` at the layer's output and ``dY`` the change of
that output, which is linear in dW: the layer run on its own input with dW in place
of its weight (and nothing else). One forward and one backward pass over the images
give every layer's input and output gradient; each cell then costs one run of its own
layer, not of the model from the layer on. The whole F of the layer counts (errors
of different weights that add up in the output, as a k = 1 collapse makes them, are
seen); what it neglects is the curvature of the model after the layer, beyond the
second order.

Each image's output gradient is its own (images do not mix in an eval-mode forward
pass), so a batch's backward pass gives them all exactly; the expectation over y is
estimated with ``draws`` labels per image from a generator seeded by ``seed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn
from torch.func import functional_call

from qretrain.errors import QretrainError
from qretrain.progress import Progress

logger = logging.getLogger(__name__)

# Modules whose output is linear in each of their own parameters (batch norm's affine
# weight and bias included), and returned as one tensor with the images first.
LINEAR_IN_PARAMETERS: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
)

# Bytes of recorded inputs, outputs and output gradients one pass may hold: a pass
# holds every module's, so the sweep of EfficientNet-Lite1 at 240 px in float32 peaked at
# 13.0 GB in batches of 64, and at 3.0 GB in passes of 8 (1 GiB), in 0.6x the time on 2
# CPU cores (benchmarks/bench_fisher_passes.py). The images do not mix, so the passes'
# size changes no prediction.
RECORD_BYTES = 1 << 30

Calls = dict[str | None, list]  # module name -> [(inputs, output)] per call; None: the result


def predicted_kls(model: nn.Module, batches: list[torch.Tensor],
                  cells: dict[Hashable, dict[str, torch.Tensor]], *, seed: int = 0,
                  draws: int = 1, progress: bool = False
                  ) -> tuple[dict[Hashable, float], torch.Tensor]:  # fmt: skip
    """Each cell's predicted mean KL(original || changed) in nats, and the model's
    logits (N, classes), float32 on the CPU.

    model: in eval mode; its parameters named in ``cells`` belong to convolutions,
        linear layers or batch norms (``LINEAR_IN_PARAMETERS``), each called as a
        module of its own in the forward pass.
    batches: the images, each (B, ...), in the model's device and dtype.
    cells: key -> {parameter name: its change dW, the parameter's shape}.
    draws: labels drawn per image from the model's own prediction.
    progress: count the images done (``qretrain.progress``: a bar, or lines in a log).
    The model is left as it was (its ``requires_grad`` flags restored).
    """
    params = dict(model.named_parameters())
    names = list(dict.fromkeys(n for change in cells.values() for n in change))
    owners = {n: _owner(model, params, n) for n in names}
    modules = {m: model.get_submodule(m) for m in dict.fromkeys(owners.values())}
    sums = _Sums(modules, owners, cells, draws, torch.Generator().manual_seed(seed))
    start, images = time.perf_counter(), 0
    per_pass = 1  # images per pass: one first, then as many as RECORD_BYTES hold
    bar = Progress("Predicting", sum(len(b) for b in batches), "images", enabled=progress)
    with bar, _gradients_of(model, set(names)), _recorded(modules) as record:
        for batch in batches:
            at = 0
            while at < len(batch):
                x = batch[at : at + per_pass]
                recorded = sums.add_pass(model, x, record, measure=images == 0)
                if images == 0:
                    per_image = recorded // len(x)
                    fits = RECORD_BYTES // max(per_image, 1)
                    per_pass = max(1, min(fits, max(len(b) for b in batches)))
                    logger.debug("Fisher passes of %d images (%d MiB recorded per image)",
                                 per_pass, per_image >> 20)  # fmt: skip
                at += len(x)
                images += len(x)
                bar.update(len(x))
    logger.info("predicted the KL of %d cells over %d images (%d draws) in %.1f s", len(cells),
                images, draws, time.perf_counter() - start)  # fmt: skip
    kls = {key: 0.5 * s / (images * draws) for key, s in sums.squares.items()}
    return kls, torch.cat(sums.logits)


class _Sums:
    """What the passes add up: each cell's sum of squared ``G . dY`` over images and
    draws, and the logits, pass by pass."""

    def __init__(self, modules: dict[str, nn.Module], owners: dict[str, str],
                 cells: dict[Hashable, dict[str, torch.Tensor]], draws: int,
                 generator: torch.Generator) -> None:  # fmt: skip
        self.modules, self.owners, self.cells = modules, owners, cells
        self.draws, self.generator = draws, generator
        self.squares = dict.fromkeys(cells, 0.0)
        self.logits: list[torch.Tensor] = []  # (B, classes) per pass

    def add_pass(self, model: nn.Module, x: torch.Tensor, record: Callable[[Callable], Calls],
                 *, measure: bool) -> int:  # fmt: skip
        """One forward and backward pass over ``x`` (B, ...), added in. With ``measure``
        returns the bytes the pass held at once (the modules' inputs, outputs and output
        gradients), else 0."""
        modules, draws = self.modules, self.draws
        with torch.enable_grad():
            calls = record(partial(model, x))
            out = calls.pop(None).float()  # (B, classes)
            _check_calls(calls, modules, len(x))
            log_p = out.log_softmax(1)
            probs = log_p.detach().exp().cpu()
            outputs = [y for m in modules for _, y in calls[m]]
            grads = []  # per draw: module name -> G (B, ...) per call, None if unused
            for draw in range(draws):
                y = torch.multinomial(probs, 1, generator=self.generator).to(out.device)
                flat = torch.autograd.grad(log_p.gather(1, y).sum(), outputs,
                                           retain_graph=draw < draws - 1,
                                           allow_unused=True) if outputs else ()  # fmt: skip
                grads.append(_by_module(flat, calls, modules))
        with torch.no_grad():
            # G of the module last used, (B, n) float32: a unit's cells come together
            # and share it, so each G is converted once per pass, not once per cell
            held: dict[tuple[str, int, int], torch.Tensor | None] = {}
            for key, change in self.cells.items():
                dots = torch.zeros(draws, len(x), dtype=torch.float64)  # G . dY per image
                for n, dw in change.items():
                    m = self.owners[n]
                    if not any(k[0] == m for k in held):
                        held = {(m, c, d): _per_image(grads[d][m][c], torch.float32)
                                for c in range(len(calls[m])) for d in range(draws)}  # fmt: skip
                    for c, (inputs, _) in enumerate(calls[m]):
                        dy = _per_image(_linear_change(modules[m], n.rpartition(".")[2], dw,
                                                       inputs), torch.float32)  # fmt: skip
                        for d in range(draws):
                            g = held[m, c, d]
                            if g is not None:  # None: the output does not reach the logits
                                dots[d] += (g * dy).sum(1).double().cpu()
                self.squares[key] += float(dots.square().sum())
        self.logits.append(out.detach().cpu())
        return _recorded_bytes(calls, grads) if measure else 0


def _recorded_bytes(calls: Calls, grads: list[dict[str, list]]) -> int:
    """The bytes a pass held at once: the modules' inputs, outputs and output gradients."""
    held = sum(_bytes(t) for per in calls.values() for inputs, y in per for t in (*inputs, y))
    return held + sum(_bytes(g) for per in grads for gs in per.values() for g in gs)


def _bytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def _owner(model: nn.Module, params: dict[str, nn.Parameter], name: str) -> str:
    """The name of the module that holds parameter ``name``; refuses what the
    prediction cannot follow."""
    if name not in params:
        raise QretrainError(f"{name} is not a parameter (a buffer has no gradient): the "
                            "Fisher signal predicts trained weights only; sweep with signal "
                            "'measured'")  # fmt: skip
    owner = name.rpartition(".")[0]
    module = model.get_submodule(owner)
    if not isinstance(module, LINEAR_IN_PARAMETERS):
        raise QretrainError(f"{name} belongs to a {type(module).__name__}, whose output the "
                            "Fisher signal cannot follow (it needs convolutions, linear layers "
                            "and batch norms); sweep with signal 'measured'")  # fmt: skip
    return owner


def _check_calls(calls: Calls, modules: dict[str, nn.Module], batch: int) -> None:
    """Every module ran as a module, on the batch's images along its first dimension."""
    for m in modules:
        if not calls.setdefault(m, []):
            raise QretrainError(f"{m} never ran as a module of its own (its parent uses its "
                                "weights directly, as attention does its out_proj): the Fisher "
                                "signal cannot follow it; sweep with signal 'measured'")  # fmt: skip
        for _, y in calls[m]:
            if not isinstance(y, torch.Tensor) or y.dim() == 0 or len(y) != batch:
                shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                raise QretrainError(f"{m}'s output {shape} does not hold the batch's {batch} "
                                    "images along its first dimension: the Fisher signal "
                                    "cannot tell them apart; sweep with signal 'measured'")  # fmt: skip


def _per_image(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``t`` (B, ...) as (B, n) in ``dtype``, its elements in a fixed order: a 4-d tensor's
    channels last (a view, no copy, of the channels-last outputs a sweep's convolutions
    give), so that two tensors of one shape line up element by element."""
    if t is None:
        return None
    flat = t.permute(0, 2, 3, 1) if t.dim() == 4 else t
    return flat.reshape(len(t), -1).to(dtype)


def _linear_change(module: nn.Module, attr: str, dw: torch.Tensor,
                   inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:  # fmt: skip
    """dY (B, ...): the change of ``module``'s output on ``inputs`` when its parameter
    ``attr`` moves by ``dw`` (the parameter's shape). The output is linear in the
    parameter, so that is the module run with ``dw`` in its place and its other
    parameters zero (a bias too: it does not move)."""
    own = dict(module.named_parameters(recurse=False))
    replaced = {a: (dw.to(p.device, p.dtype) if a == attr else torch.zeros_like(p))
                for a, p in own.items()}  # fmt: skip
    return functional_call(module, replaced, inputs)


def _by_module(flat: tuple[torch.Tensor | None, ...], calls: Calls,
               modules: dict[str, nn.Module]) -> dict[str, list[torch.Tensor | None]]:  # fmt: skip
    """The flat gradients, one per recorded output, back into module name -> per call."""
    out, at = {}, 0
    for m in modules:
        count = len(calls[m])
        out[m] = list(flat[at : at + count])
        at += count
    return out


@contextmanager
def _gradients_of(model: nn.Module, names: set[str]) -> Iterator[None]:
    """Only the parameters ``names`` require gradients (so every recorded output is in
    the graph, and no other gradient is kept); the flags are restored after."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])


@contextmanager
def _recorded(modules: dict[str, nn.Module]) -> Iterator[Callable[[Callable], Calls]]:
    """``record(run)``: the calls of ``modules`` while ``run()`` runs, as module name ->
    [(inputs, output)] of each call, with what ``run`` returned under None. Calls outside
    ``record`` (the cells' own runs of a layer) are not recorded.

    The model goes on with a copy of each recorded output: a later in-place operation
    (``ReLU(inplace=True)`` right after a convolution) then changes the copy, and the
    gradient at the recorded output stays that of the layer's own output, not of the
    activation's."""
    calls: Calls = {}
    active = [False]

    def hook_for(name: str) -> Callable:
        def hook(module, inputs, output):
            if not active[0]:
                return None
            calls.setdefault(name, []).append((tuple(i.detach() for i in inputs), output))
            return output.clone() if isinstance(output, torch.Tensor) else None

        return hook

    def record(run: Callable) -> Calls:
        calls.clear()
        active[0] = True
        try:
            calls[None] = run()
        finally:
            active[0] = False
        return dict(calls)

    handles = [m.register_forward_hook(hook_for(name)) for name, m in modules.items()]
    try:
        yield record
    finally:
        for h in handles:
            h.remove()
