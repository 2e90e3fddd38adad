"""Retraining figures from run records, after the seed's Figures 9/14, 15 and 16."""

from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import MaxNLocator

from qretrain._plot import plt, save_png


def quality_per_epoch(runs: dict[str, dict], labels: dict[str, str], path: Path) -> Path:
    """Monitor quality after every epoch, epoch 0 = the clustered start (Figs. 9, 14)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, record in runs.items():
        epochs = [0] + [h["epoch"] for h in record["history"]]
        quality = [record["quality_before"]] + [h["monitor"] for h in record["history"]]
        ax.plot(epochs, [100 * q for q in quality], marker="o", ms=3,
                label=f"{labels[name]} ({record['monitor_metric']})")  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("quality on the monitor set (%)")
    ax.set_title("Retraining, epoch by epoch (cf. the seed's Figs. 9, 14)", fontsize=9)
    ax.legend(fontsize=7)
    return save_png(fig, path)


def before_after(models: dict[str, dict], metric: str, path: Path) -> Path:
    """Quality of every model on the evaluation set (Fig. 15)."""
    names = list(models)
    values = [100 * (models[n][metric] or 0) for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bars = ax.bar(range(len(names)), values, color=["0.5", "tab:red"] + ["tab:blue"] * 8)
    for bar, v in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom",
                fontsize=8)  # fmt: skip
    ax.set_xticks(range(len(names)), [models[n]["label"] for n in names], fontsize=8,
                  rotation=15)  # fmt: skip
    low = min(values)
    ax.set_ylim(max(0, low - 10), 100)
    ax.set_ylabel(f"{'top-1' if metric == 'top1' else metric} (%)")
    ax.set_title("Before and after retraining, held-out set (cf. the seed's Fig. 15)", fontsize=9)
    return save_png(fig, path)


def retrain_time(runs: dict[str, dict], labels: dict[str, str], path: Path) -> Path:
    """Wall time of each retraining run, the one-time cache pass shown apart (Fig. 16)."""
    names = list(runs)
    cache = [runs[n].get("cache_seconds", 0.0) for n in names]
    total = [runs[n]["wall_seconds"] for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.bar(range(len(names)), cache, color="tab:orange", label="one-time cache pass")
    ax.bar(range(len(names)), [t - c for t, c in zip(total, cache)], bottom=cache,
           color="tab:blue", label="epochs and the rest")  # fmt: skip
    for i, t in enumerate(total):
        ax.text(i, t, f"{t:.1f} s", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), [labels[n] for n in names], fontsize=8)
    ax.set_ylabel("wall time (s)")
    ax.set_title("Retraining time (cf. the seed's Fig. 16)", fontsize=9)
    ax.legend(fontsize=7)
    return save_png(fig, path)
