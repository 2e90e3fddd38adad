"""matplotlib set up for files only (Agg: no display needed), and one way to save."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from qretrain.storage.atomic import atomic_path  # noqa: E402


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically as PNG and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
