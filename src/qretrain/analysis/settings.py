"""What a sweep measures: its settings, checked once (torch-free: the command line
offers them and a run config is checked before torch is loaded)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qretrain._settings import Settings, choice, int_set, integer, optional, setting, subset_of
from qretrain.cluster.options import MAX_K, Granularity, Method
from qretrain.models.selector import SYNTAX, Selector

if TYPE_CHECKING:
    import torch

DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Sweep kinds: what one analysis cell clusters in a layer. "bn" is the four
# batch-norm tensors of the layer's batch norm, as plans' ``kinds: [bn]`` selects them.
SWEEP_KINDS = ("weight", "bias", "bn")
# Codebooks a sweep may try: one per tensor, one per output channel, or one of pairs of
# output channels (tensors of two or more dimensions only, an even number of channels for
# pairs; a unit holding another tensor of the kind has no such cells).
GRANULARITIES = tuple(g.value for g in Granularity)


class Unit(str, enum.Enum):
    """What one row of cells clusters."""

    LAYER = "layer"  # one conv / linear layer (with its batch norm)
    BLOCK = "block"  # a block of layers sharing an output size (see ``census``)


class Signal(str, enum.Enum):
    """How a sweep tells each cell's quality."""

    MEASURED = "measured"  # a forward pass per cell: agreement and KL on the images
    FISHER = "fisher"  # KL predicted from Fisher-weighted clustering error (analysis.fisher)


class Precision(str, enum.Enum):
    """The dtype of the sweep's forward passes."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"  # ~3x faster on CPUs with AMX or AVX-512 BF16

    @property
    def dtype(self) -> torch.dtype:
        import torch  # the sweep's, once it runs: the settings themselves are torch-free

        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[self.value]


def _layers_selector(value: str | Selector) -> Selector:
    selector = value if isinstance(value, Selector) else Selector.parse(value)
    if selector.kinds is not None:
        raise ValueError("a sweep selects layers; its kinds are the 'kinds' setting")
    return selector


@dataclass(frozen=True)
class AnalyzeSettings(Settings):
    """``select``: which layers to sweep (a selector: ``13-49``, ``type=Conv2d``,
    ``name=_blocks.1*``; all when None); ``kinds``: weight, bias, bn; ``signal``: each
    cell's quality measured, or its KL predicted (``Signal``)."""

    ks: tuple[int, ...] = setting(
        DEFAULT_KS, int_set(1, MAX_K), "centroid counts to sweep (default: %(default)s)"
    )
    kinds: tuple[str, ...] = setting(
        ("weight", "bias"),
        subset_of(SWEEP_KINDS),
        f"tensor kinds to sweep, some of {','.join(SWEEP_KINDS)} (default: %(default)s)",
    )
    granularities: tuple[str, ...] = setting(
        ("tensor",),
        subset_of(GRANULARITIES),
        "codebooks to sweep: tensor (one per tensor), channel (one per output channel), "
        "pairs (one of 2-vectors of neighbouring output channels); several, e.g. "
        "tensor,pairs, give the planner each to choose from per layer (default: tensor)",
    )
    unit: Unit = setting(
        Unit.LAYER,
        choice(Unit),
        "one row of cells per layer, or per block of layers sharing an output size",
    )
    select: Selector | None = setting(
        None, optional(_layers_selector), "layers to sweep (default: all): " + SYNTAX
    )
    method: Method = setting(
        Method.KMEANS, choice(Method), "how each cell clusters (default: %(default)s)"
    )
    seed: int = setting(
        0, integer(0), "seed of the clustering (and of signal fisher's label draws)"
    )
    batch_size: int = setting(64, integer(1), "images per forward pass")
    precision: Precision = setting(
        Precision.FLOAT32,
        choice(Precision),
        "forward passes in bfloat16: ~3x faster on CPUs with AMX or AVX-512 BF16, many "
        "times slower on others",
    )
    signal: Signal = setting(
        Signal.MEASURED,
        choice(Signal),
        "measured (default): each cell's agreement and KL from a forward "
        "pass of its own; fisher: each cell's KL predicted from its "
        "Fisher-weighted clustering error, one forward and backward pass "
        "over the images in all, in passes that record at most 1 GiB (plans "
        "on the kl metric only; kinds weight and bias)",
    )

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.granularities == ("tensor",):  # the default, as records made before the setting
            del d["granularities"]
        return d

    def check(self) -> list[str]:
        if self.signal is Signal.FISHER and "bn" in self.kinds:
            return [
                (
                    "signal 'fisher' needs gradients, which batch norm's running statistics "
                    "have none of: sweep kinds weight,bias, or signal 'measured'"
                )
            ]
        if "pairs" in self.granularities and self.method is not Method.KMEANS:
            return [f"granularity 'pairs' clusters with method 'kmeans' only; got method "
                    f"{self.method.value!r}: drop pairs from granularities, or use kmeans"]  # fmt: skip
        return []
