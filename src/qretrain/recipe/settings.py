"""The measured recipe's settings: a size target, how to win quality back, and how
the user's unlabeled images are shared between the stages. Checked once, without
torch (the command line and run configs check them before any stage runs)."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any

from qretrain._settings import (
    Settings,
    boolean,
    choice,
    integer,
    number,
    optional,
    setting,
    subset_of,
)
from qretrain.analysis.settings import GRANULARITIES, AnalyzeSettings, Signal
from qretrain.errors import QretrainError
from qretrain.export.options import Deploy
from qretrain.planner.settings import Metric
from qretrain.retrain.config import Objective, RetrainConfig

BFLOAT16_FROM = 4 << 20  # float32 bytes from which the sweep runs in bfloat16
# Block-wise retraining makes up for a block's error in the blocks after it; the last
# layer (the classifier) has none after it. EfficientNet-Lite0 at 8x, label-free images:
# retraining left 13-31% of the other layers' KL and 27-100% of the classifier's, 2 to
# 7 times the share (docs/BENCHMARKS.md), so the planner weighs the last layer's cost
# five times (at three, the 8x plan is unchanged).
LAST_LAYER_WEIGHT = 5.0
MAX_RATIO = 256  # numbers up to this are ratios to float32; larger ones are bytes
_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>x|B|KB|MB|GB)?", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9}


@dataclass(frozen=True)
class Target:
    """A size to reach: ``ratio`` times smaller than float32, or at most ``size`` bytes."""

    ratio: float | None = None
    size: int | None = None

    @classmethod
    def parse(cls, value: Any) -> Target:
        """``7``, ``"7x"``, ``6.5``: a ratio; ``"2.6MB"``, ``"900KB"``, ``2682299``: bytes."""
        if isinstance(value, Target):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise QretrainError(
                f"must be a ratio (7, '7x') or a size ('2.6MB', 2682299); got {value!r}"
            )
        match = _SIZE.fullmatch(str(value).strip())
        if match is None:
            raise QretrainError(
                f"must be a ratio (7, '7x') or a size ('2.6MB', 2682299); got {value!r}"
            )
        number, unit = float(match["number"]), (match["unit"] or "").lower()
        if unit == "x" or (not unit and number <= MAX_RATIO):
            if not 1 < number <= MAX_RATIO:
                raise QretrainError(f"a ratio must be in (1, {MAX_RATIO}]; got {value!r}")
            return cls(ratio=number)
        size = math.floor(number * _UNITS.get(unit, 1))
        if size < 1:
            raise QretrainError(f"a size must be at least 1 byte; got {value!r}")
        return cls(size=size)

    def bytes_for(self, float32_bytes: int) -> int:
        """The file size the target allows for a model of ``float32_bytes``."""
        return self.size if self.size is not None else round(float32_bytes / self.ratio)

    def __str__(self) -> str:
        return f"{self.ratio:g}x" if self.ratio is not None else f"{self.size}B"


class Recover(str, enum.Enum):
    """How quality is won back after clustering, without labels."""

    BLOCKS = "blocks"  # block-wise reconstruction, codebooks and assignments tuned
    OUTPUT = "output"  # the seed's: match the original's outputs
    NONE = "none"  # keep the clustered model as it is


# The recipe behind the measured figures (docs/BENCHMARKS.md): block-wise with
# centroid tuning and learned assignments, each pass over a high-resolution block on
# as many images as hold 2^24 of its output values (EfficientNet-Lite0's blocks in
# 0.6 of the time at a held-out KL 0.95 of every image's, over seeds 0-2); output
# matching at its defaults.
RECOVERY = {
    Recover.BLOCKS: RetrainConfig(
        objective=Objective.BLOCKS,
        block_epochs=4,
        block_values=1 << 24,
        lr=3e-4,
        batch_size=32,
        tune_centroids=True,
        tune_assignments=True,
    ),
    Recover.OUTPUT: RetrainConfig(),
}


@dataclass(frozen=True)
class RecipeSettings(Settings):
    """What ``qretrain.compress`` does. Exactly one of ``target`` (a size, of the
    ``deploy`` artifact) and ``max_drop`` (points of ``metric``, nats for kl) is given.

    The unlabeled images are shared out by one permutation from ``seed``: the
    first ``held_out`` (a fifth, at least 50, at most ``max_held_out``) are never
    trained on, chosen on or planned on: the guard decides on them, and they are
    what quality is reported on; of the rest, ``sweep_images`` measure each layer
    alone (or, with ``signal`` fisher, predict its KL), the next ``verify_images``
    verify the plan by measurement, and up to ``retrain_images`` retrain.
    """

    target: Target | None = setting(
        None, optional(Target.parse), "a ratio to float32 (7x) or a file size (2.6MB, 900KB, bytes)"
    )
    max_drop: float | None = setting(
        None,
        optional(number(at_least=0)),
        "instead of --target: the largest drop of --metric the plan may cost",
    )
    metric: Metric = setting(
        Metric.KL,
        choice(Metric),
        "what --max-drop and the plan's verification measure (default "
        "kl, in nats; agreement in points)",
    )
    recover: Recover = setting(
        Recover.BLOCKS,
        choice(Recover),
        "how quality is won back: blocks (block-wise reconstruction, "
        "default), output (match the original's outputs) or none",
    )
    seed: int = setting(0, integer(0), "seed of the permutation that shares the images out")
    min_images: int = setting(100, integer(2))
    max_held_out: int = setting(500, integer(10))
    sweep_images: int = setting(256, integer(1))
    verify_images: int = setting(256, integer(1))
    retrain_images: int = setting(4096, integer(1))
    signal: Signal | None = setting(
        None,
        optional(choice(Signal)),
        "how the sweep rates each layer alone: fisher (each cell's KL "
        "predicted from its Fisher-weighted clustering error, one forward and "
        "backward pass over the images; the default with metric kl) or measured (a forward "
        "pass per cell; the default with metric agreement); the plan is "
        "verified by measurement either way",
    )
    deploy: Deploy = setting(
        Deploy.H5,
        choice(Deploy),
        "what --target sizes: h5 (the qretrain file, default) or coreml "
        "(the Core ML package: k of 2, 4, 8, 16, 64 or 256 only, measured by "
        "converting the model; pip install 'qretrain[coreml]')",
    )
    granularities: tuple[str, ...] = setting(
        ("tensor",),
        subset_of(GRANULARITIES),
        "codebooks the plan may use: tensor (one per tensor, default), or also "
        "channel (one per output channel) or pairs (one of 2-vectors of neighbouring "
        "output channels), e.g. tensor,pairs: the planner weighs each layer by layer, "
        "at its bytes",
    )
    channel_scales: bool = setting(
        True,
        boolean,
        "cluster each convolution's weights as they are, not each output channel at its "
        "own scale with the batch norm after it taking the scale back (the default: no "
        "byte more, a closer start)",
    )
    epochs: int | None = setting(
        None,
        optional(integer(1)),
        f"passes per block (blocks, default "
        f"{RECOVERY[Recover.BLOCKS].block_epochs}) or epochs (output, "
        f"default {RECOVERY[Recover.OUTPUT].epochs})",
    )

    def check(self) -> list[str]:
        if (self.target is None) == (self.max_drop is None):
            return ["give exactly one of target (a size: 7, '7x', '2.6MB') and max_drop"]
        if self.metric is Metric.ACCURACY:
            return ["the recipe needs no labels: metric must be 'kl' or 'agreement'"]
        if self.signal is Signal.FISHER and self.metric is not Metric.KL:
            return [
                (
                    f"signal 'fisher' predicts each cell's KL and no {self.metric.value}: "
                    "metric must be 'kl', or signal 'measured'"
                )
            ]
        return []

    @property
    def sweep_signal(self) -> Signal:
        """``signal``, or by default fisher for the KL metric (it orders Lite0's cells as
        the measured sweep does, Spearman 0.99, at a seventh of the time) and measured
        for agreement, which fisher cannot predict."""
        if self.signal is not None:
            return self.signal
        return Signal.FISHER if self.metric is Metric.KL else Signal.MEASURED

    def analyze_settings(self, float32_bytes: int, fast_bfloat16: bool) -> AnalyzeSettings:
        """Weights only (biases and batch norm stay float, where retraining works);
        a large model's forward passes in bfloat16 where the device computes it
        natively (``device.fast_bfloat16``; the sweep ranks cells, which bfloat16
        keeps, at a third of the time), else in float32: a small model's, where
        bfloat16's conversions cost more than they save, and every model's on a
        device without native bfloat16, where it is many times slower; the
        ``sweep_signal``."""
        large = float32_bytes >= BFLOAT16_FROM
        precision = "bfloat16" if large and fast_bfloat16 else "float32"
        return AnalyzeSettings(kinds=("weight",), precision=precision, seed=self.seed,
                               signal=self.sweep_signal, granularities=self.granularities)  # fmt: skip

    def retrain_config(self) -> RetrainConfig | None:
        if self.recover is Recover.NONE:
            return None
        config = RECOVERY[self.recover].to_dict() | {"seed": self.seed}
        if self.epochs is not None:
            config["block_epochs" if self.recover is Recover.BLOCKS else "epochs"] = self.epochs
        return RetrainConfig.from_dict(config)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["target"] = None if self.target is None else str(self.target)
        d["signal"] = self.sweep_signal.value  # what ran, the default resolved
        if self.deploy is Deploy.H5:  # the default, as records made before the setting
            del d["deploy"]
        if self.granularities == ("tensor",):  # the same
            del d["granularities"]
        return d
