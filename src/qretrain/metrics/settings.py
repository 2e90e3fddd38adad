"""How evaluation runs: checked once, like every stage's settings."""

from __future__ import annotations

from dataclasses import dataclass

from qretrain._settings import Settings, integer, setting


@dataclass(frozen=True)
class EvaluateSettings(Settings):
    batch_size: int = setting(64, integer(1), "images per forward pass (default %(default)s)")
