"""PNG plots of a sweep, after the seed's Figures 6-8 (VGG-16) and 11-13 (ResNet-50).

matplotlib runs on its file-only backend (Agg): no display needed. With more units
than a legend can name, size and quality become heatmaps (unit x k) instead of lines.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from qretrain._plot import plt, save_png

MAX_LINES = 12  # units drawn as lines; more become a heatmap
KL_FLOOR = 1e-6  # nats: predicted KL below it (unchanged tensors: 0) is drawn at it


def plot_sweep(sweep, out_dir: str | Path) -> list[Path]:
    """Write census.png and size_<kind>.png / quality_<kind>.png; return their paths."""
    out_dir = Path(out_dir)
    written = [_census(sweep, out_dir / "census.png")]
    metric = (
        "kl"
        if sweep.predicted
        else "accuracy"
        if sweep.baseline.get("top1") is not None
        else "agreement"
    )
    for kind in sweep.kinds():
        written.append(_per_k(sweep, kind, "size", metric, out_dir / f"size_{kind}.png"))
        written.append(_per_k(sweep, kind, "quality", metric, out_dir / f"quality_{kind}.png"))
    return written


def _census(sweep, path: Path) -> Path:
    rows = sweep.census
    kinds = [k for k in ("weight", "bias", "bn") if any(k in r.params for r in rows)]
    x = np.arange(len(rows))
    width = 0.8 / len(kinds)
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(rows) + 2), 3.6))
    for i, kind in enumerate(kinds):
        counts = [r.params.get(kind, 0) for r in rows]
        ax.bar(x + (i - (len(kinds) - 1) / 2) * width, counts, width, label=kind)
    ax.set_yscale("log")
    ax.set_xticks(x, [str(r.layer) for r in rows], fontsize=7 if len(rows) > 30 else 9)
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel("parameters")
    ax.set_title(f"Parameters per layer of {sweep.settings['model']} (cf. the seed's Figs. 6, 11)")
    # Block boundaries as light separators, labelled once.
    blocks = [r.block for r in rows]
    for i in range(1, len(rows)):
        if blocks[i] != blocks[i - 1]:
            ax.axvline(i - 0.5, color="0.8", lw=0.8)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def _grid(sweep, kind: str, what: str, metric: str):
    units = [u for u in sweep.units() if any(c.unit == u and c.kind == kind for c in sweep.cells)]
    ks = sorted({c.k for c in sweep.cells if c.kind == kind})
    grid = np.full((len(units), len(ks)), np.nan)
    base_bytes = sweep.baseline["file_bytes"]
    for c in sweep.cells:
        if c.kind != kind:
            continue
        if what == "size":
            value = 100 * (1 - c.file_bytes / base_bytes)
        elif metric == "kl":  # predicted KL, from 1e-6 nats up: decades on one axis
            value = math.log10(max(c.kl, KL_FLOOR))
        else:
            value = 100 * sweep.quality(c, metric)
        grid[units.index(c.unit), ks.index(c.k)] = value
    return units, ks, grid


def _per_k(sweep, kind: str, what: str, metric: str, path: Path) -> Path:
    units, ks, grid = _grid(sweep, kind, what, metric)
    label = (
        "file size reduction (%)"
        if what == "size"
        else "log10 predicted KL (nats)"
        if metric == "kl"
        else f"{metric} (%)"
    )
    figure = "Figs. 7, 12" if what == "size" else "Figs. 8, 13"
    title = f"{kind}s clustered alone: {label} (cf. the seed's {figure})"
    unit_word = "block" if sweep.settings["unit"] == "block" else "layer"
    if len(units) <= MAX_LINES:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for i, unit in enumerate(units):
            ax.plot(range(len(ks)), grid[i], marker="o", ms=3, label=f"{unit_word} {unit}")
        if what == "quality" and metric != "kl":
            ax.axhline(100 * sweep.quality(None, metric), color="k", ls="--", lw=0.8,
                       label="unclustered")  # fmt: skip
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_xlabel("k (centroids)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7, ncol=2)
    else:
        fig, ax = plt.subplots(figsize=(6.4, max(3.5, 0.16 * len(units) + 1.5)))
        cmap = "viridis" if what == "size" else "magma"
        image = ax.imshow(grid, aspect="auto", cmap=cmap, interpolation="nearest")
        fig.colorbar(image, ax=ax, label=label)
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_yticks(range(len(units)), units, fontsize=6)
        ax.set_xlabel("k (centroids)")
        ax.set_ylabel(unit_word)
    ax.set_title(title, fontsize=9)
    return save_png(fig, path)
