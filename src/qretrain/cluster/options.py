"""The closed sets of choices a clustering takes: method, granularity and the most
centroids (torch-free: the command line and run configs offer and check them)."""

from __future__ import annotations

import enum

from qretrain.errors import QretrainError

MAX_K = 256  # centroids a codebook may hold: indices are uint8


class Method(str, enum.Enum):
    """How a tensor's values are grouped into k clusters."""

    KMEANS = "kmeans"  # least squared error (exact or near-optimal 1-D k-means)
    EQUAL_COUNT = "equal-count"  # the seed's Figure 2: equal populations
    LINEAR = "linear"  # evenly spaced over [min, max], then moved to member means
    # k-means weighted by each weight's importance: its diagonal Fisher information on
    # unlabeled data (compress.importance), as SqueezeLLM and coremltools' SKMPalettizer
    SENSITIVE = "sensitive-kmeans"


class Granularity(str, enum.Enum):
    """Which weights share one codebook."""

    TENSOR = "tensor"  # one codebook for the whole tensor
    CHANNEL = "channel"  # one codebook per output channel (first dimension)
    # One codebook of 2-vectors for the whole tensor: each index gives the weights of two
    # neighbouring output channels at one position (coremltools' vector palettization,
    # cluster_dim 2 along the output channels). k counts pairs, so a pair's index takes
    # log2(k) bits: k = 16 costs 2 bits a weight, as a scalar codebook of 4 values.
    PAIRS = "pairs"


VECTOR = {Granularity.TENSOR: 1, Granularity.CHANNEL: 1, Granularity.PAIRS: 2}  # values per index


def parse_enum(enum_cls: type[enum.Enum], value: object, what: str) -> enum.Enum:
    """``enum_cls(value)`` with an error that lists the allowed values."""
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum_cls)
        raise QretrainError(f"{what} must be one of {allowed}; got {value!r}") from None
