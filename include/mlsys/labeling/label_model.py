"""GoldAwareLabelModel: combine LF votes into calibrated labels, choosing the combiner on expert gold.

    gold ──split (stratified, seeded)──► fit half ─► LF accuracies, class prior ─► gold_weighted_vote
                                       └ dev half ─► pick the best candidate ─► calibrate it ─► its accuracy
    candidates: majority_vote (MajorityLabelVoter), label_model (Snorkel LabelModel, fit on the weak rows),
                gold_weighted_vote (each LF votes with the log-odds of its accuracy on gold; naive Bayes)

The chosen combiner's probabilities are calibrated on the dev half (temperature
scaling, which keeps every hard label), and its accuracy there is the weak
source's measured quality. Without gold the LabelModel is used uncalibrated,
and its quality is its own mean confidence on the rows it labels.

The class balance comes from the gold set (a uniform sample of the corpus), not
from the rows the LFs cover: LFs that fire mostly on one class make the covered
rows a biased sample. It is the LabelModel's ``class_balance``, and with the gold
rows on which every LF abstains it gives ``uncovered_proba``, the class
distribution of the rows no LF labels (smoothed towards the balance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlsys.errors import DataError

if TYPE_CHECKING:
    import numpy as np

CANDIDATES = ("majority_vote", "label_model", "gold_weighted_vote")
MIN_GOLD = 10  # fewer gold rows than this cannot split into fit and dev halves usefully
_EPS = 1e-6
PRIOR_STRENGTH = 4.0  # pseudo-rows of the class balance added to the uncovered gold rows' counts


@dataclass
class GoldSplit:
    fit: "np.ndarray"  # indices into the gold rows
    dev: "np.ndarray"


def split_gold(y: "np.ndarray", seed: int, dev_fraction: float = 0.5) -> GoldSplit:
    """Stratified split of the gold rows into a fit half and a dev half."""
    import numpy as np

    rng = np.random.default_rng(seed)
    fit, dev = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_dev = int(round(len(idx) * dev_fraction))
        dev.extend(idx[:n_dev])
        fit.extend(idx[n_dev:])
    return GoldSplit(np.sort(np.array(fit, dtype=int)), np.sort(np.array(dev, dtype=int)))


def lf_accuracy(L: "np.ndarray", y: "np.ndarray") -> tuple["np.ndarray", "np.ndarray"]:
    """Per LF: (accuracy where it votes, number of votes) on labeled rows; accuracy NaN without votes."""
    import numpy as np

    voted = L != -1
    n = voted.sum(axis=0)
    correct = (voted & (L == y[:, None])).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, correct / np.maximum(n, 1), np.nan)
    return acc, n


def _normalise(scores: "np.ndarray") -> "np.ndarray":
    import numpy as np

    scores = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(scores)
    return p / p.sum(axis=1, keepdims=True)


@dataclass
class GoldWeightedVote:
    """Naive-Bayes vote: each LF adds log((k-1) acc / (1 - acc)) to the class it votes for."""

    cardinality: int
    weights: "np.ndarray"
    log_prior: "np.ndarray"

    @classmethod
    def fit(cls, L: "np.ndarray", y: "np.ndarray", cardinality: int) -> "GoldWeightedVote":
        import numpy as np

        voted = L != -1
        correct = (voted & (L == y[:, None])).sum(axis=0)
        acc = (correct + 1.0) / (voted.sum(axis=0) + 2.0)  # Laplace: an LF never seen on gold gets 0.5
        weights = np.maximum(np.log((cardinality - 1) * acc / (1 - acc)), 0.0)  # worse than chance: ignored
        prior = (np.bincount(y, minlength=cardinality) + 1.0) / (len(y) + cardinality)
        return cls(cardinality, weights, np.log(prior))

    def predict_proba(self, L: "np.ndarray") -> "np.ndarray":
        import numpy as np

        scores = np.tile(self.log_prior, (len(L), 1))
        for c in range(self.cardinality):
            scores[:, c] += ((L == c) * self.weights).sum(axis=1)
        return _normalise(scores)


@dataclass
class GoldAwareLabelModel:
    cardinality: int = 2
    epochs: int = 500
    seed: int = 0
    chosen: str = ""
    quality: float = 0.0
    quality_source: str = ""
    dev_accuracy: dict[str, float] = field(default_factory=dict)
    calibrated: bool = False
    temperature: float = 1.0
    models: dict = field(default_factory=dict)
    gold_split: GoldSplit | None = None
    gold_lf_accuracy: "np.ndarray | None" = None
    class_balance: "np.ndarray | None" = None  # P(y) of the corpus
    class_balance_source: str = ""  # "gold" (its rows' labels) or "label_model" (learned without gold)
    uncovered_proba: "np.ndarray | None" = None  # P(y | every LF abstains)
    uncovered_source: str = ""  # "gold" (its all-abstain rows) or "label_model"

    def fit(self, L_train: "np.ndarray", L_gold: "np.ndarray | None" = None,
            y_gold: "np.ndarray | None" = None) -> "GoldAwareLabelModel":
        import numpy as np
        from snorkel.labeling.model import LabelModel, MajorityLabelVoter

        k = self.cardinality
        has_gold = y_gold is not None and len(y_gold) >= MIN_GOLD and len(np.unique(y_gold)) >= 2
        balance = None
        if has_gold:
            y_gold = np.asarray(y_gold, dtype=np.int64)
            balance = (np.bincount(y_gold, minlength=k) + 1.0) / (len(y_gold) + k)  # Laplace: no class at 0
        label_model = LabelModel(cardinality=k, verbose=False)
        label_model.fit(L_train, class_balance=balance, n_epochs=self.epochs, seed=self.seed, progress_bar=False)
        self.models = {"majority_vote": MajorityLabelVoter(cardinality=k), "label_model": label_model}
        if not has_gold:
            self.chosen = "label_model"
            proba = label_model.predict_proba(L_train)
            covered = (L_train != -1).any(axis=1)
            self.quality = float(proba[covered].max(axis=1).mean()) if covered.any() else 0.0
            self.quality_source = "label_model_confidence"
            self.class_balance = np.asarray(label_model.predict_proba(L_train).mean(axis=0), dtype=float)
            self.class_balance_source = "label_model"
            abstain_row = np.full((1, L_train.shape[1]), -1)
            self.uncovered_proba = np.asarray(label_model.predict_proba(abstain_row)[0], dtype=float)
            self.uncovered_source = "label_model"
            return self

        self.class_balance, self.class_balance_source = balance, "gold"
        uncovered_gold = y_gold[~(L_gold != -1).any(axis=1)]
        counts = np.bincount(uncovered_gold, minlength=k) + PRIOR_STRENGTH * balance
        self.uncovered_proba, self.uncovered_source = counts / counts.sum(), "gold"
        self.gold_lf_accuracy = lf_accuracy(L_gold, y_gold)[0]
        split = self.gold_split = split_gold(y_gold, self.seed)
        self.models["gold_weighted_vote"] = GoldWeightedVote.fit(L_gold[split.fit], y_gold[split.fit], k)

        L_dev, y_dev = L_gold[split.dev], y_gold[split.dev]
        covered = (L_dev != -1).any(axis=1)
        score = {}
        for name in CANDIDATES:
            p = self.raw_proba(name, L_dev)
            pred = p.argmax(axis=1)
            acc = float((pred[covered] == y_dev[covered]).mean()) if covered.any() else 0.0
            brier = float(((p[covered] - np.eye(k)[y_dev[covered]]) ** 2).sum(axis=1).mean()) if covered.any() else 1.0
            self.dev_accuracy[name] = acc
            score[name] = (acc, -brier)
        self.chosen = max(CANDIDATES, key=lambda n: score[n])

        self._fit_calibration(self.raw_proba(self.chosen, L_dev[covered]), y_dev[covered])
        if covered.any():
            pred = self.predict_proba(L_dev[covered]).argmax(axis=1)
            self.quality = float((pred == y_dev[covered]).mean())
        self.quality_source = "dev_gold_accuracy"
        return self

    def _fit_calibration(self, proba: "np.ndarray", y: "np.ndarray") -> None:
        """Temperature scaling: one T > 0 with softmax(log p / T) minimising log loss on dev gold.

        It changes confidence, never the hard label (the argmax stays), so calibration cannot
        undo the choice made on accuracy.
        """
        import numpy as np
        from scipy.optimize import minimize_scalar

        self.calibrated, self.temperature = False, 1.0
        if len(y) < MIN_GOLD:
            return
        logp = np.log(np.clip(proba, _EPS, 1.0))

        def nll(log_t: float) -> float:
            p = _normalise(logp / np.exp(log_t))
            return float(-np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0)).mean())

        best = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
        self.temperature, self.calibrated = float(np.exp(best.x)), True

    def raw_proba(self, name: str, L: "np.ndarray") -> "np.ndarray":
        """Uncalibrated class probabilities of one candidate."""
        if name not in self.models:
            raise DataError(f"label model candidate {name!r} was not fitted; fitted: {sorted(self.models)}")
        return self.models[name].predict_proba(L)

    def predict_proba(self, L: "np.ndarray") -> "np.ndarray":
        """Calibrated probabilities of the chosen combiner."""
        import numpy as np

        proba = self.raw_proba(self.chosen, L)
        if not self.calibrated or len(L) == 0:
            return proba
        return _normalise(np.log(np.clip(proba, _EPS, 1.0)) / self.temperature)

    def learned_weights(self, lf_names: list[str]) -> dict[str, list[float]]:
        """Per candidate, the weight it gives each LF (LabelModel: learned accuracy; gold vote: log-odds)."""
        out = {"label_model": [float(w) for w in self.models["label_model"].get_weights()]}
        if "gold_weighted_vote" in self.models:
            out["gold_weighted_vote"] = [float(w) for w in self.models["gold_weighted_vote"].weights]
        return out
