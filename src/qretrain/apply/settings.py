"""How ``qretrain compress`` and the pipeline's compress stage write the file
(torch-free: the command line offers these settings before torch is loaded)."""

from __future__ import annotations

from dataclasses import dataclass

from qretrain._settings import Settings, boolean, choice, optional, setting
from qretrain.cluster.options import Method
from qretrain.storage.layout import Layout


@dataclass(frozen=True)
class CompressSettings(Settings):
    """``layout``: packed (bit-packed indices + codebooks) or paper (the seed's float32);
    ``method``: overrides the plan's default method (rules naming one keep it);
    ``fold_batchnorm``: store unclustered batch norm as a scale and a shift per
    channel (``storage.fold``); by default in the packed layout only."""

    layout: Layout = setting(
        Layout.PACKED,
        choice(Layout),
        "packed: bit-packed indices + codebook (default); paper: the seed's float32 + gzip",
    )
    fold_batchnorm: bool | None = setting(
        None,
        optional(boolean),
        "store unclustered batch norm as a scale and a "
        "shift per channel (default: in the packed layout)",
    )
    method: Method | None = setting(
        None,
        optional(choice(Method)),
        "default clustering method, overriding the plan's (rules naming one keep it)",
    )
