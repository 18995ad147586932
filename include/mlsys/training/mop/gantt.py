"""The MOP schedule as a picture: which configuration ran on which worker, when (matplotlib, loaded on call).

One row per worker (it holds one partition); one bar per unit, coloured by configuration and labelled
with its name and epoch. Gaps in a row are a worker waiting: for a runnable configuration (every idle
one has already seen this partition this epoch) or for a state to arrive.
"""

from __future__ import annotations

from typing import Sequence

from mlsys.training.mop.scheduler import Visit


def figure(visits: Sequence[Visit], title: str = "MOP schedule", unit: str = "s"):
    """A matplotlib Figure of ``visits`` (call ``matplotlib.use("Agg")`` first where there is no display)."""
    import matplotlib.pyplot as plt

    configs = sorted({v.config for v in visits})
    workers = sorted({v.worker for v in visits})
    cmap = plt.get_cmap("tab10" if len(configs) <= 10 else "tab20")
    colour = {c: cmap(i % cmap.N) for i, c in enumerate(configs)}
    short = {c: c.split("-")[0] if len({x.split("-")[0] for x in configs}) == len(configs) else str(i)
             for i, c in enumerate(configs)}  # bar labels: "c3" of "c3-adam-d32-lr0.003"
    rows = (len(configs) + 3) // 4
    fig, ax = plt.subplots(figsize=(11, 1.4 + 0.8 * len(workers) + 0.25 * rows))
    for v in visits:
        ax.barh(v.worker, v.end - v.start, left=v.start, height=0.7, color=colour[v.config], edgecolor="white")
        ax.text((v.start + v.end) / 2, v.worker, f"{short[v.config]}\ne{v.epoch}", ha="center", va="center",
                fontsize=7)
    ax.set_yticks(workers, [f"worker {w}\n(partition {w})" for w in workers])
    ax.invert_yaxis()
    ax.set_xlabel(f"time ({unit}); bars: configuration and epoch")
    ax.set_title(title, fontsize=10)
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colour[c]) for c in configs], labels=configs,
              loc="upper center", bbox_to_anchor=(0.5, -0.28 - 0.1 / max(len(workers), 1)), ncol=4, fontsize=7,
              frameon=False)
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> None:
    """``python -m mlsys.training.mop.gantt TIMELINE.json OUT.png [TITLE]``: TIMELINE as ``mlsys bench mop
    --timeline`` writes it ([config, epoch, worker, start, end] per unit)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    rows = json.loads(open(argv[0]).read())
    visits = [Visit(c, e, w, w, s, t) for c, e, w, s, t in rows]
    fig = figure(visits, title=argv[2] if len(argv) > 2 else "MOP schedule")
    fig.savefig(argv[1], dpi=110)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
