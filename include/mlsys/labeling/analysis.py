"""LF analysis: which labeling function to fix, as a table and plots (logged to MLflow).

Per LF, on the weak rows: coverage (votes), overlap (votes where another LF votes too),
conflict (votes where another LF votes differently); on gold: coverage and empirical
accuracy; the weights the label models learned; the errors it raised (fault-tolerant mode).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TABLE = "lf_summary.json"
PLOTS = ("lf_coverage.png", "lf_accuracy.png")


def lf_table(lfs: Sequence, L: "np.ndarray", L_gold: "np.ndarray | None", y_gold: "np.ndarray | None",
             learned: dict[str, list[float]], errors: dict[str, int]) -> "pd.DataFrame":
    import numpy as np
    import pandas as pd

    from mlsys.labeling.label_model import lf_accuracy

    voted = L != -1
    n_votes = voted.sum(axis=1, keepdims=True)
    rows = max(len(L), 1)
    table = pd.DataFrame({"lf": [lf.name for lf in lfs]})
    table["polarity"] = [",".join(str(v) for v in sorted(set(L[:, j][voted[:, j]].tolist()))) for j in range(len(lfs))]
    table["coverage"] = voted.sum(axis=0) / rows
    table["overlap"] = (voted & (n_votes > 1)).sum(axis=0) / rows
    conflict = np.zeros(len(lfs))
    for j in range(len(lfs)):
        others = np.delete(L, j, axis=1)
        disagree = ((others != -1) & (others != L[:, [j]])).any(axis=1)
        conflict[j] = (voted[:, j] & disagree).sum() / rows
    table["conflict"] = conflict
    if L_gold is not None and y_gold is not None and len(y_gold):
        acc, n = lf_accuracy(L_gold, y_gold)
        table["gold_coverage"] = n / len(y_gold)
        table["gold_accuracy"] = acc
    else:
        table["gold_coverage"] = np.nan
        table["gold_accuracy"] = np.nan
    for name, weights in learned.items():
        table[f"weight_{name}"] = weights
    table["errors"] = [int(errors.get(lf.name, 0)) for lf in lfs]
    return table


def plot_coverage(table: "pd.DataFrame"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 0.3 * len(table) + 1.5))
    y = np.arange(len(table))
    for k, (col, color) in enumerate((("coverage", "tab:blue"), ("overlap", "tab:green"), ("conflict", "tab:red"))):
        ax.barh(y + (k - 1) * 0.27, table[col], height=0.27, color=color, label=col)
    ax.set_yticks(y, table["lf"])
    ax.invert_yaxis()
    ax.set_xlabel("fraction of weak rows")
    ax.set_title("Labeling functions: coverage, overlap, conflict")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_accuracy(table: "pd.DataFrame"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 0.3 * len(table) + 1.5))
    y = np.arange(len(table))
    ax.barh(y - 0.2, table["gold_accuracy"].fillna(0), height=0.4, color="tab:orange", label="accuracy on gold")
    if "weight_label_model" in table:
        ax.barh(y + 0.2, table["weight_label_model"], height=0.4, color="tab:purple",
                label="LabelModel learned accuracy")
    ax.set_yticks(y, table["lf"])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_title("Labeling functions: accuracy on gold vs the LabelModel's estimate")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def log_analysis(table: "pd.DataFrame") -> None:
    """Log the table and the plots to the active MLflow run (nothing without one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    if mlflow.active_run() is None:
        return
    mlflow.log_table(table, TABLE)
    for name, plot in zip(PLOTS, (plot_coverage, plot_accuracy)):
        fig = plot(table)
        mlflow.log_figure(fig, name)
        plt.close(fig)
