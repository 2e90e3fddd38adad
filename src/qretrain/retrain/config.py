"""Settings of one retraining run, validated, with JSON forms for the run record."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

from qretrain.cluster.options import parse_enum
from qretrain.errors import QretrainError


class Loss(str, enum.Enum):
    KL = "kl"  # KL(teacher_T || student_T) * T^2 on temperature-softened outputs
    MSE = "mse"  # mean squared error between logits
    CE = "ce"  # cross-entropy on labels: conventional retraining


class BNStats(str, enum.Enum):
    FROZEN = "frozen"  # batch norm keeps its running statistics (eval mode)
    UPDATE = "update"  # batch norm re-estimates them on the retraining data


@dataclass(frozen=True)
class RetrainConfig:
    """``trainable``: "unclustered", "last" (the unclustered parameters of the last
    module holding a clustered tensor and of every module called after it), or a
    selector like "name=classifier.*",
    "type=BatchNorm2d", "layers=6-7" (several joined by ";"), as plan rules select.
    ``labels=True`` is conventional retraining: cross-entropy on the data's labels.
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: Loss = Loss.KL
    temperature: float = 2.0
    trainable: str = "unclustered"
    bn_stats: BNStats = BNStats.FROZEN
    labels: bool = False
    tune_centroids: bool = False
    cache: bool = True  # teacher outputs and frozen-prefix features, computed once
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", parse_enum(Loss, self.loss, "loss"))
        object.__setattr__(self, "bn_stats", parse_enum(BNStats, self.bn_stats, "bn_stats"))
        if self.labels:
            object.__setattr__(self, "loss", Loss.CE)
        elif self.loss is Loss.CE:
            raise QretrainError("loss 'ce' needs labels (conventional retraining: labels=True)")
        errors = []
        if self.epochs < 1:
            errors.append(f"epochs must be >= 1; got {self.epochs}")
        if self.batch_size < 1:
            errors.append(f"batch_size must be >= 1; got {self.batch_size}")
        if self.lr <= 0:
            errors.append(f"lr must be > 0; got {self.lr}")
        if self.temperature <= 0:
            errors.append(f"temperature must be > 0; got {self.temperature}")
        if errors:
            raise QretrainError("; ".join(errors))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["loss"], d["bn_stats"] = self.loss.value, self.bn_stats.value
        return d
