"""What the automatic planner aims for: one budget and a metric, checked once."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qretrain._settings import Settings, choice, integer, number, optional, setting
from qretrain.export.options import Deploy


class Metric(str, enum.Enum):
    """What a budget in points is of."""

    AGREEMENT = "agreement"  # share of top-1 predictions equal to the original's: no labels
    ACCURACY = "accuracy"  # top-1 with the data's labels
    KL = "kl"  # mean KL(original || clustered) over images, in nats: continuous, no labels


@dataclass(frozen=True)
class PlanSettings(Settings):
    """Exactly one budget: ``max_drop`` (points of ``metric``; nats for ``kl``) or
    ``target_size`` (bytes of the ``deploy`` artifact: the packed file, or the Core ML
    package). ``refine``: rounds of re-choosing a
    target-size plan with each chosen cell's share of the measured drop in place of its
    sweep cost (``planner.auto``); a round is kept only if it measures better."""

    max_drop: float | None = setting(
        None,
        optional(number(at_least=0)),
        "budget in points of --metric (agreement, accuracy), or "
        "in nats of mean KL to the original (kl)",
    )
    target_size: int | None = setting(
        None,
        optional(integer(1)),
        "budget in bytes of the --deploy artifact (the packed file by default)",
    )
    metric: Metric = setting(
        Metric.AGREEMENT, choice(Metric), "what --max-drop is of (default %(default)s)"
    )
    batch_size: int = setting(64, integer(1), "images per forward pass")
    refine: int = setting(
        0,
        integer(0),
        "with --target-size: R rounds of re-choosing the cells with each "
        "one's share of the measured drop (one backward pass each; a round "
        "is kept only if it measures better)",
    )

    last_layer_weight: float = setting(
        1.0,
        number(at_least=1),
        "how many times the model's last layer's predicted cost counts when choosing: "
        "retraining makes up for a layer's error in the layers after it, and the last "
        "has none (the recipe: 5 when it retrains block-wise)",
    )
    deploy: Deploy = setting(
        Deploy.H5,
        choice(Deploy),
        "what the plan is sized for: h5 (the qretrain file, default) or "
        "coreml (a Core ML package: k of 2, 4, 8, 16, 64 or 256 only, the "
        "size measured by converting the model; pip install 'qretrain[coreml]')",
    )

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.deploy is Deploy.H5:  # the default, as records made before the setting
            del d["deploy"]
        if self.last_layer_weight == 1.0:  # likewise
            del d["last_layer_weight"]
        return d

    def check(self) -> list[str]:
        if (self.max_drop is None) == (self.target_size is None):
            return ["give exactly one budget: max_drop (points) or target_size (bytes)"]
        if self.refine and self.target_size is None:
            return ["refine re-chooses a target-size plan: give target_size, or refine 0"]
        return []
