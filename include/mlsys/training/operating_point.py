"""The operating point: the decision threshold of a binary end model, chosen on held-out gold.

The end model's probabilities answer "how likely is class 1", but the right cut depends on
what the user needs: the F1-optimal threshold (default), or the lowest threshold whose
precision on dev gold reaches a target. It is chosen on the gold rows the model never
trained on (training/examples.py), stored in the model's config (model/artifact.py), and
used by evaluate, batch scoring and serving (serving/scorer.py). The PR curve and a
reliability (calibration) plot of the dev rows go to the training run in MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

RULES = ("f1", "precision", "argmax")
MIN_DEV_POSITIVES = 3  # fewer positive dev rows cannot place a threshold: 0.5 is kept


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float  # predict class 1 when P(class 1) >= threshold
    rule: str
    dev_rows: int
    metrics: dict[str, float]  # precision, recall, f1 on dev gold at the threshold

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "rule": self.rule, "dev_rows": self.dev_rows, "metrics": self.metrics}


def _prf(y: "np.ndarray", pred: "np.ndarray") -> dict[str, float]:
    tp = float(((pred == 1) & (y == 1)).sum())
    fp = float(((pred == 1) & (y == 0)).sum())
    fn = float(((pred == 0) & (y == 1)).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def choose(y: "np.ndarray", p1: "np.ndarray", rule: str = "f1", precision_target: float = 0.9) -> OperatingPoint:
    """The threshold on P(class 1) that ``rule`` picks on dev gold (labels ``y``, scores ``p1``).

    f1: the cut with the best expected F1 over bootstrap resamples of dev (``_bootstrap_f1``), on a
    0.02 grid. (A one-standard-error rule, keeping 0.5 unless a cut beats it by more than the noise,
    was measured and dropped: on rare classes it kept 0.5 where the F1 cut doubled recall.) precision: the lowest grid cut whose dev precision reaches ``precision_target``
    (the F1 cut when none does). argmax: 0.5.
    """
    import numpy as np

    y, p1 = np.asarray(y, dtype=np.int64), np.asarray(p1, dtype=float)
    if rule not in RULES:
        raise ValueError(f"operating point rule {rule!r}: use one of {RULES}")
    if rule == "argmax" or int((y == 1).sum()) < MIN_DEV_POSITIVES or int((y == 0).sum()) < MIN_DEV_POSITIVES:
        return OperatingPoint(0.5, "argmax" if rule == "argmax" else f"{rule}:too_few_dev_rows", len(y),
                              _prf(y, (p1 >= 0.5).astype(int)))
    grid = np.round(np.linspace(0.02, 0.98, 49), 2)  # holds 0.5
    if rule == "precision":
        ok = [t for t in grid if (s := _prf(y, (p1 >= t).astype(int)))["precision"] >= precision_target
              and s["recall"] > 0]
        if ok:
            t = float(min(ok))
            return OperatingPoint(t, f"precision>={precision_target}", len(y), _prf(y, (p1 >= t).astype(int)))
    f1 = _bootstrap_f1(y, p1, grid)
    t = float(np.median(grid[f1 >= f1.max() - 1e-9]))
    return OperatingPoint(t, "f1" if rule == "f1" else f"f1:precision_{precision_target}_unreached", len(y),
                          _prf(y, (p1 >= t).astype(int)))


def _bootstrap_f1(y: "np.ndarray", p1: "np.ndarray", grid: "np.ndarray", draws: int = 200) -> "np.ndarray":
    """Mean F1 at each threshold of ``grid`` over bootstrap resamples of the dev rows (seeded).

    Dev gold is small (half of a 200-row gold set holds a dozen positives of a rare class), and F1
    on it is a jagged step function of the threshold: its raw maximum is one lucky cut. The mean
    over resamples is the expected F1 of each cut, smooth enough to pick from.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(y), size=(draws, len(y)))
    ys, ps = y[idx], p1[idx]  # (draws, n)
    pred = ps[:, :, None] >= grid[None, None, :]  # (draws, n, T)
    pos = (ys == 1)[:, :, None]
    tp = (pred & pos).sum(axis=1)
    fp = (pred & ~pos).sum(axis=1)
    fn = (~pred & pos).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return f1.mean(axis=0)


def log_plots(y: "np.ndarray", p1: "np.ndarray", point: OperatingPoint) -> None:
    """PR curve (with the chosen point) and reliability diagram of the dev gold rows, to the active MLflow run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import numpy as np

    y, p1 = np.asarray(y), np.asarray(p1, dtype=float)
    order = np.argsort(-p1)
    tp = np.cumsum(y[order] == 1)
    precision = tp / np.arange(1, len(y) + 1)
    recall = tp / max(int((y == 1).sum()), 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    ax1.step(recall, precision, where="post")
    ax1.scatter([point.metrics["recall"]], [point.metrics["precision"]], color="red", zorder=3,
                label=f"threshold {point.threshold:.2f} ({point.rule})")
    ax1.set(xlabel="recall", ylabel="precision", title=f"PR curve, dev gold ({len(y)} rows)", xlim=(0, 1.02),
            ylim=(0, 1.02))
    ax1.legend(loc="lower left")
    bins = np.linspace(0, 1, 6)
    which = np.clip(np.digitize(p1, bins) - 1, 0, len(bins) - 2)
    mean_p = [p1[which == b].mean() for b in range(len(bins) - 1) if (which == b).any()]
    frac = [(y[which == b] == 1).mean() for b in range(len(bins) - 1) if (which == b).any()]
    ax2.plot([0, 1], [0, 1], ls="--", color="grey")
    ax2.plot(mean_p, frac, marker="o")
    ax2.set(xlabel="mean predicted P(class 1)", ylabel="observed share of class 1", title="Calibration, dev gold")
    fig.tight_layout()
    mlflow.log_figure(fig, "operating_point.png")
    plt.close(fig)
