"""The layouts a model file is written in (torch-free: the command line offers them)."""

from __future__ import annotations

import enum


class Layout(str, enum.Enum):
    PACKED = "packed"  # bit-packed indices + codebook per clustered tensor
    PAPER = "paper"  # the seed's: every tensor float32, gzip does the rest
