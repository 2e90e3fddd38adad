"""Settings of one retraining run, checked once, with JSON forms for the run record."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qretrain._settings import Settings, boolean, choice, integer, number, optional, setting
from qretrain.errors import QretrainError
from qretrain.models.selector import SYNTAX, Selector


MIN_PASS_IMAGES = 256  # block_values never trains a pass on fewer images (8 steps of 32)


class Loss(str, enum.Enum):
    KL = "kl"  # KL(teacher_T || student_T) * T^2 on temperature-softened outputs
    MSE = "mse"  # mean squared error between logits
    CE = "ce"  # cross-entropy on labels: conventional retraining


class Objective(str, enum.Enum):
    OUTPUT = "output"  # the seed's: match the teacher's output vectors
    BLOCKS = "blocks"  # reconstruct each block's output in turn (retrain.blocks)
    BLOCKS_OUTPUT = "blocks+output"  # blocks, then ``epochs`` of output matching


class BNStats(str, enum.Enum):
    FROZEN = "frozen"  # batch norm keeps its running statistics (eval mode)
    UPDATE = "update"  # batch norm re-estimates them on the retraining data


@dataclass(frozen=True)
class Trainable:
    """Which parameters retraining changes: every unclustered one, those of the last
    layers (``last``: the unclustered parameters of the last module holding a
    clustered tensor and of every module called after it), or a ``Selector``."""

    mode: str  # "unclustered" | "last" | "selected"
    selector: Selector | None = None

    @classmethod
    def parse(cls, value: str | Trainable) -> Trainable:
        if isinstance(value, Trainable):
            return value
        if value in ("unclustered", "last"):
            return cls(value)
        try:
            return cls("selected", Selector.parse(value))
        except QretrainError:
            raise QretrainError(
                f"must be 'unclustered', 'last' or {SYNTAX}; got {value!r}"
            ) from None

    def __str__(self) -> str:
        return str(self.selector) if self.selector is not None else self.mode


@dataclass(frozen=True)
class RetrainConfig(Settings):
    """``labels=True`` is conventional retraining: cross-entropy on the data's labels
    (``loss`` becomes ``ce``). ``objective`` ``blocks`` trains block by block for
    ``block_epochs`` passes each (``epochs`` then counts only for ``blocks+output``);
    ``tune_assignments`` lets each block also choose its weights' centroids."""

    epochs: int = setting(
        5,
        integer(1),
        "passes over D of output matching or, with labels, of cross-entropy (default %(default)s)",
    )
    objective: Objective = setting(
        Objective.OUTPUT,
        choice(Objective),
        "output: match the teacher's outputs (the seed's, default); "
        "blocks: reconstruct each block's output in turn, "
        "--block-epochs passes each; blocks+output: blocks, then "
        "--epochs of output matching",
    )
    block_epochs: int = setting(4, integer(1), "passes over D per block (default %(default)s)")
    block_values: int | None = setting(
        None,
        optional(integer(1)),
        "block-wise: each pass over a block trains on a random subset of D holding about "
        "this many of the block's output values (at least "
        f"{MIN_PASS_IMAGES} images): early, high-resolution blocks hold few weights and cost "
        "the most time (default: every image)",
    )
    batch_size: int = setting(128, integer(1), "images per step (default %(default)s)")
    lr: float = setting(1e-3, number(above=0), "Adam's learning rate (default %(default)s)")
    weight_decay: float = setting(
        0.0, number(at_least=0), "Adam's weight decay (default %(default)s)"
    )
    loss: Loss = setting(Loss.KL, choice(Loss), "between output vectors (default kl)")
    temperature: float = setting(
        2.0, number(above=0), "softens both outputs for the kl loss (default %(default)s)"
    )
    trainable: Trainable = setting(
        Trainable("unclustered"), Trainable.parse, "unclustered (default), last, or " + SYNTAX
    )
    bn_stats: BNStats = setting(
        BNStats.FROZEN, choice(BNStats), "batch-norm running statistics: frozen (default) or update"
    )
    labels: bool = setting(False, boolean, "conventional: cross-entropy on labels")
    tune_centroids: bool = setting(
        False, boolean, "also train clustered tensors' codebook values (indices fixed)"
    )
    tune_assignments: bool = setting(
        False,
        boolean,  # block-wise: retrain.rounding
        "block-wise, with --tune-centroids: each weight also "
        "chooses between its two nearest centroids by the "
        "block's output",
    )
    rounding_lambda: float = setting(
        10.0,
        number(at_least=0),
        "with --tune-assignments: weight of the term pushing each "
        "weight to one of its two centroids (default %(default)s, a "
        "thousand times AdaRound's: a block trains for hundreds of "
        "steps, not 20,000)",
    )
    # teacher outputs and frozen-prefix features, once
    cache: bool = setting(
        True,
        boolean,
        "output matching with frozen batch norm and "
        "codebooks: run the frozen layers before the trainable ones on "
        "every batch instead of once over D, keeping their outputs (less "
        "memory, more time)",
    )
    seed: int = setting(0, integer(0), "seed of the shuffling and held-out images")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labels:
            object.__setattr__(self, "loss", Loss.CE)

    def check(self) -> list[str]:
        problems = []
        if self.loss is Loss.CE and not self.labels:
            problems.append("loss 'ce' needs labels (conventional retraining: labels=True)")
        if self.tune_assignments and self.objective is Objective.OUTPUT:
            problems.append("tune_assignments is block-wise (each block chooses its weights' "
                            "centroids); use objective 'blocks' or 'blocks+output'")  # fmt: skip
        if self.objective is not Objective.OUTPUT:
            if self.labels:
                problems.append(f"objective {self.objective.value!r} is label-free; "
                                "conventional retraining (labels=True) uses 'output'")  # fmt: skip
            if self.tune_assignments and not self.tune_centroids:
                problems.append("tune_assignments trains codebook values with the assignments; "
                                "set tune_centroids too")  # fmt: skip
            if self.bn_stats is BNStats.UPDATE:
                problems.append(f"objective {self.objective.value!r} keeps batch norm frozen; "
                                "use bn_stats 'frozen'")  # fmt: skip
        return problems
