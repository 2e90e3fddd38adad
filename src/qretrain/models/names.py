"""The closed sets of names that describe a model, torch-free: tensor kinds and the
input contract's facts. The command line offers them and a run config is checked
against them before torch is loaded; ``layers`` and ``contract`` use them.
"""

from __future__ import annotations

import enum


class ParamKind(str, enum.Enum):
    """The role of a tensor, as plans select it."""

    WEIGHT = "weight"  # conv / linear weight
    BIAS = "bias"  # conv / linear bias
    BN_WEIGHT = "bn_weight"  # batch-norm scale (gamma)
    BN_BIAS = "bn_bias"  # batch-norm shift (beta)
    BN_RUNNING_MEAN = "bn_running_mean"
    BN_RUNNING_VAR = "bn_running_var"


BN_KINDS = (
    ParamKind.BN_WEIGHT,
    ParamKind.BN_BIAS,
    ParamKind.BN_RUNNING_MEAN,
    ParamKind.BN_RUNNING_VAR,
)

# What an input contract states (``contract.InputContract``), and how it resizes.
FACTS = ("channels", "size", "mean", "std", "resize", "interpolation")
INTERPOLATIONS = ("bilinear", "bicubic")
