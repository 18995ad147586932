"""PNG plots for ``mlsys bench all``: one per benchmark, one row per figure (its median, range and target)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlsys.bench.harness import meets


def plot(benchmark: str, figures: list[dict[str, Any]], path: Path, subtitle: str = "") -> Path | None:
    """Each figure on its own axis: the range as a bar, the median as a dot (green: target met, red: not,
    grey: no target), the target as a dashed line. None when there is nothing to plot."""
    if not figures:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = sorted(figures, key=lambda f: f["target"] is None)  # figures with a target first
    fig, axes = plt.subplots(len(figures), 1, figsize=(7, 0.75 * len(figures) + 0.9), squeeze=False)
    for ax, f in zip(axes[:, 0], figures):
        lo, hi, med, target = f["range"][0], f["range"][1], f["median"], f["target"]
        color = "grey" if not target else ("tab:green" if meets(med, target) else "tab:red")
        ax.hlines(0, lo, hi, color=color, linewidth=6, alpha=0.35)
        ax.plot([med], [0], "o", color=color)
        values = [lo, hi, med]
        if target:
            ax.axvline(target[1], color="black", linestyle="--", linewidth=1)
            values.append(target[1])
        span = (max(values) - min(values)) or abs(med) or 1.0
        ax.set_xlim(min(values) - 0.15 * span, max(values) + 0.15 * span)
        label = f"{f['name']}  {med:.3g}" + (f"  (target {target[0]} {target[1]:g})" if target else "")
        ax.set_title(label, fontsize=8, loc="left", pad=2)
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"mlsys bench {benchmark}" + (f": {subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
