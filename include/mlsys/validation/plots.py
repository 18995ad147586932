"""Plots of dataset statistics for MLflow: a histogram per numeric column, top values per categorical one."""

from __future__ import annotations

import math

from mlsys.validation.statistics import DatasetStatistics

MAX_PANELS = 20


def statistics_figure(stats: DatasetStatistics):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in stats.columns.values() if c.histogram or (c.top and c.type in ("string", "bool"))][:MAX_PANELS]
    n = max(1, len(cols))
    width = min(4, n)
    fig, axes = plt.subplots(math.ceil(n / width), width, figsize=(4 * width, 2.6 * math.ceil(n / width)), squeeze=False)
    for ax in axes.flat[len(cols):]:
        ax.axis("off")
    for ax, c in zip(axes.flat, cols):
        if c.histogram:
            edges, counts = c.histogram["edges"], c.histogram["counts"]
            ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges[:-1], edges[1:])], align="edge")
        else:
            top = c.top[:8]
            ax.barh([str(v)[:18] for v, _ in top][::-1], [k for _, k in top][::-1])
            ax.tick_params(axis="y", labelsize=6)
        ax.set_title(f"{c.name} ({'int' if c.integral else c.type}, {c.missing_fraction:.1%} missing)", fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
    fig.subplots_adjust(hspace=0.6, wspace=0.35)  # not tight_layout: it costs seconds on many panels
    return fig
