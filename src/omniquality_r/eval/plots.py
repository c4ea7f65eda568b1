"""Prediction-vs-MOS scatter plots, one panel per (task, dataset)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def scatter_plot(rows: Sequence[dict], readouts: Sequence[str], path: str | Path) -> Path:
    """One panel per (task, dataset): MOS on x, each read-out's score on y, diagonal for y = x."""
    groups = sorted({(r["task"], r["dataset"]) for r in rows})
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(4 * max(len(groups), 1), 4),
                             squeeze=False)  # fmt: skip
    for ax, (task, dataset) in zip(axes[0], groups):
        sel = [r for r in rows if r["task"] == task and r["dataset"] == dataset]
        for readout in readouts:
            ax.scatter([r["mos"] for r in sel], [r[f"score_{readout}"] for r in sel],
                       s=8, alpha=0.6, label=readout)  # fmt: skip
        ax.plot([0, 5], [0, 5], color="gray", lw=0.8)
        ax.set(title=f"{task} / {dataset}", xlabel="MOS (0-5)", ylabel="predicted",
               xlim=(-0.1, 5.1), ylim=(-0.1, 5.1))  # fmt: skip
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
