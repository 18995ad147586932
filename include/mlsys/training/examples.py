"""The training examples of a labeled dataset: which rows train, with which targets and weights.

    comments_labeled ──► gold rows ──stratified half──► dev (never trained on: picks the operating point)
                    ├──► weak and other gold rows (weight > 0)                         ──┐
                    └──► uncovered rows (every LF abstained; ``uncovered``):             ├─► rebalanced to the
                           drop        not trained on                                    │   corpus class balance
                           prior       target P(y | no LF votes) from the label stage    │   (``rebalance``)
                           self_train  that, then the first model's confident predictions┘

Why: LFs written for a rare class fire mostly on it, so the rows they cover carry a far higher
share of that class than the corpus does, and the rows they leave uncovered are mostly the
other class. A model trained on the covered rows alone learns the wrong prior and over-predicts
the rare class. The label stage measures both the class balance and P(y | uncovered) on the
gold set (a uniform sample), and stores them with the dataset (``extra``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlsys.datasets import trainable

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

UNCOVERED_MODES = ("drop", "prior", "self_train")
DEV_FRACTION = 0.5
CONFIDENT = 0.9  # self-training keeps predictions at least this sure of their class


@dataclass
class Examples:
    train: "pd.DataFrame"  # text, label_proba, weight (rebalanced), label_source
    base: "pd.DataFrame"  # the same rows before rebalancing
    dev: "pd.DataFrame"  # held-out gold rows: text, label
    uncovered: "pd.DataFrame"  # rows no LF labeled (for self-training)
    class_balance: list[float]
    class_balance_source: str
    notes: dict[str, Any]


def prepare(labeled: "pd.DataFrame", extra: dict, uncovered: str, rebalance: bool, seed: int) -> Examples:
    """Split ``labeled`` into training rows, dev gold and uncovered rows; weigh the training rows."""
    import numpy as np

    rows = trainable(labeled)
    gold = rows[rows["label_source"] == "gold"]
    dev_idx = np.array([], dtype=int)
    if len(gold) >= 20 and gold["label"].nunique() >= 2:  # enough gold to hold some out
        dev_idx = _stratified_half(gold, seed)
    dev = rows.loc[dev_idx, ["text", "label"]].reset_index(drop=True)
    train = rows.drop(index=dev_idx)[["text", "label_proba", "weight", "label_source"]].reset_index(drop=True)

    unc = labeled[labeled["label_source"] == "unlabeled"][["text", "label_proba", "weight", "label_source"]]
    unc = unc.reset_index(drop=True)
    quality = float(extra.get("weak_quality") or 0.0)
    notes: dict[str, Any] = {"uncovered_mode": uncovered, "dev_gold_rows": len(dev), "uncovered_rows": len(unc)}
    if uncovered in ("prior", "self_train") and len(unc) and extra.get("uncovered_proba"):
        prior = np.asarray(extra["uncovered_proba"], dtype=float)
        unc = unc.assign(label_proba=[list(map(float, prior))] * len(unc), weight=float(prior.max()) * quality)
        train = _concat(train, unc)
    balance = extra.get("class_balance") or []
    source = extra.get("class_balance_source") or ""
    ex = Examples(train=train, base=train, dev=dev, uncovered=unc, class_balance=list(balance),
                  class_balance_source=source, notes=notes)
    ex.train = _weighed(ex, train, rebalance)
    return ex


def _weighed(ex: Examples, train: "pd.DataFrame", rebalance: bool) -> "pd.DataFrame":
    import numpy as np

    if not (rebalance and ex.class_balance):
        return train
    train, factors = _rebalance(train, np.asarray(ex.class_balance, dtype=float))
    ex.notes["rebalance_factors"] = [round(f, 4) for f in factors]
    return train


def prepare_self_training(ex: Examples, pseudo: "pd.DataFrame", rebalance: bool) -> "pd.DataFrame":
    """The second round's rows: the first round's, with the uncovered rows' targets from ``pseudo_labels``."""
    base = ex.base[ex.base["label_source"] != "unlabeled"]
    return _weighed(ex, _concat(base, pseudo), rebalance)


def _stratified_half(gold: "pd.DataFrame", seed: int) -> "np.ndarray":
    """DEV_FRACTION of each class's gold rows (seeded): the index labels of the dev rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    dev = [rng.permutation(idx.to_numpy())[: int(round(len(idx) * DEV_FRACTION))]
           for _, idx in gold.groupby("label").groups.items()]
    return np.sort(np.concatenate(dev))


def _concat(a: "pd.DataFrame", b: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    return pd.concat([a, b], ignore_index=True)


def class_mass(train: "pd.DataFrame") -> "np.ndarray":
    """Per class, the training weight it carries: sum over rows of weight x P(class)."""
    import numpy as np

    proba = np.stack(train["label_proba"].to_numpy())
    return (proba * train["weight"].to_numpy()[:, None]).sum(axis=0)


def _rebalance(train: "pd.DataFrame", balance: "np.ndarray") -> tuple["pd.DataFrame", list[float]]:
    """Scale each row's weight so that the classes carry the corpus balance of the total weight.

    A row with soft target p gets factor sum_c p_c r_c, with r the class factors that give each class
    its corpus share of the mass (importance weighting from the training rows' class shares to the
    corpus's: the prior shift of the label stage's coverage undone). The total weight is kept, so the
    learning rate means the same.
    """
    import numpy as np

    proba = np.stack(train["label_proba"].to_numpy())
    w0 = train["weight"].to_numpy()
    r = np.ones(proba.shape[1])
    for _ in range(200):  # soft targets count towards every class: scale r until the masses match (as IPF does)
        mass = (proba * (w0 * (proba @ r))[:, None]).sum(axis=0)
        share = mass / max(mass.sum(), 1e-12)
        if np.allclose(share, balance, atol=1e-10) or not (share > 0).all():
            break
        r = r * balance / share
        r /= r.max()
    w = w0 * (proba @ r)
    w *= w0.sum() / max(w.sum(), 1e-12)
    return train.assign(weight=w), [float(x) for x in r]


def pseudo_labels(uncovered: "pd.DataFrame", proba: "np.ndarray", quality: float) -> "pd.DataFrame":
    """Self-training (as COSINE does): the uncovered rows the first model is confident on take its predictions
    as targets, sharpened (p^2, renormalised), weighted by confidence x the weak labels' quality; the others
    keep their prior targets."""
    import numpy as np

    sure = proba.max(axis=1) >= CONFIDENT
    sharp = proba ** 2
    sharp /= sharp.sum(axis=1, keepdims=True)
    out = uncovered.reset_index(drop=True).copy()
    targets = list(out["label_proba"])
    for i in np.flatnonzero(sure):
        targets[i] = list(map(float, sharp[i]))
    out["label_proba"] = targets
    out["weight"] = np.where(sure, proba.max(axis=1) * max(quality, 0.5), out["weight"].to_numpy())
    out["label_source"] = np.where(sure, "self_train", out["label_source"].to_numpy())
    return out
