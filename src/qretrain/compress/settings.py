"""How ``qretrain compress`` and the pipeline's compress stage write the file."""

from __future__ import annotations

from dataclasses import dataclass

from qretrain._settings import Settings, choice, optional, setting
from qretrain.cluster.options import Method
from qretrain.storage import Layout


@dataclass(frozen=True)
class CompressSettings(Settings):
    """``layout``: packed (bit-packed indices + codebooks) or paper (the seed's float32);
    ``method``: overrides the plan's default method (rules naming one keep it)."""

    layout: Layout = setting(Layout.PACKED, choice(Layout))
    method: Method | None = setting(None, optional(choice(Method)))
