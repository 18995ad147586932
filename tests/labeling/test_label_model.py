"""GoldAwareLabelModel: the combiner is chosen on dev gold, calibrated without changing hard labels."""

from __future__ import annotations

import numpy as np
import pytest

from mlsys.labeling.label_model import (
    CANDIDATES,
    GoldAwareLabelModel,
    GoldWeightedVote,
    lf_accuracy,
    split_gold,
)


def _synthetic(n: int, accuracies, coverage: float, seed: int):
    """Labels y and a label matrix whose LF j votes on `coverage` of rows and is right with accuracies[j]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    L = np.full((n, len(accuracies)), -1)
    for j, acc in enumerate(accuracies):
        votes = rng.random(n) < coverage
        right = rng.random(n) < acc
        L[votes, j] = np.where(right[votes], y[votes], 1 - y[votes])
    return L, y


def test_split_gold_is_stratified_disjoint_and_seeded():
    y = np.array([0] * 30 + [1] * 10)
    s = split_gold(y, seed=3)
    assert sorted(np.concatenate([s.fit, s.dev]).tolist()) == list(range(40))
    assert (y[s.dev] == 1).sum() == 5 and (y[s.dev] == 0).sum() == 15
    assert np.array_equal(split_gold(y, seed=3).dev, s.dev) and not np.array_equal(split_gold(y, seed=4).dev, s.dev)


def test_lf_accuracy_counts_only_votes():
    L = np.array([[1, -1], [0, -1], [1, 1]])
    acc, n = lf_accuracy(L, np.array([1, 1, 1]))
    assert n.tolist() == [3, 1] and acc[0] == pytest.approx(2 / 3) and acc[1] == 1.0


def test_gold_weighted_vote_trusts_accurate_lfs_and_ignores_worse_than_chance():
    L, y = _synthetic(400, [0.95, 0.6, 0.3], 0.8, seed=0)
    vote = GoldWeightedVote.fit(L, y, 2)
    assert vote.weights[0] > vote.weights[1] > 0 and vote.weights[2] == 0
    from snorkel.labeling.model import MajorityLabelVoter

    majority = (MajorityLabelVoter(2).predict_proba(L).argmax(axis=1) == y).mean()
    assert (vote.predict_proba(L).argmax(axis=1) == y).mean() > majority + 0.05


def test_the_best_combiner_on_dev_gold_is_chosen_and_beats_majority_vote():
    # many weak-but-agreeing LFs outvote one excellent LF under majority vote; gold tells them apart
    accs = [0.99, 0.62, 0.62, 0.62, 0.62, 0.62]
    L_train, _ = _synthetic(2000, accs, 0.9, seed=1)
    L_gold, y_gold = _synthetic(300, accs, 0.9, seed=2)
    model = GoldAwareLabelModel(epochs=100, seed=0).fit(L_train, L_gold, y_gold)
    assert set(model.dev_accuracy) == set(CANDIDATES)
    assert model.dev_accuracy[model.chosen] == max(model.dev_accuracy.values())
    assert model.dev_accuracy[model.chosen] > model.dev_accuracy["majority_vote"]
    assert model.quality_source == "dev_gold_accuracy" and 0.5 < model.quality <= 1


def test_calibration_changes_confidence_never_the_hard_label():
    L_train, _ = _synthetic(1000, [0.9, 0.8, 0.7], 0.7, seed=3)
    L_gold, y_gold = _synthetic(200, [0.9, 0.8, 0.7], 0.7, seed=4)
    model = GoldAwareLabelModel(epochs=100, seed=0).fit(L_train, L_gold, y_gold)
    assert model.calibrated and model.temperature != 1.0
    raw, cal = model.raw_proba(model.chosen, L_train), model.predict_proba(L_train)
    assert np.allclose(cal.sum(axis=1), 1)
    decided = np.abs(raw[:, 0] - raw[:, 1]) > 1e-9
    assert np.array_equal(raw[decided].argmax(axis=1), cal[decided].argmax(axis=1))
    assert not np.allclose(raw, cal)


def test_without_gold_the_label_model_is_used_and_rates_itself():
    L_train, _ = _synthetic(500, [0.9, 0.8, 0.7], 0.7, seed=5)
    model = GoldAwareLabelModel(epochs=50).fit(L_train)
    assert model.chosen == "label_model" and not model.calibrated
    assert model.quality_source == "label_model_confidence" and 0.5 <= model.quality <= 1
    assert set(model.learned_weights(["a", "b", "c"])) == {"label_model"}


def test_class_balance_and_uncovered_rows_come_from_the_gold():
    """LFs that only fire on class 1: the covered rows are mostly 1, the corpus and the uncovered rows mostly 0."""
    import numpy as np

    from mlsys.labeling.label_model import GoldAwareLabelModel

    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.15).astype(int)
    L = np.full((3000, 3), -1)
    for j, rate in enumerate((0.7, 0.6, 0.5)):
        fires = (y == 1) & (rng.random(3000) < rate) | (y == 0) & (rng.random(3000) < 0.03)
        L[fires, j] = 1
    gold = rng.choice(3000, 200, replace=False)
    rest = np.setdiff1d(np.arange(3000), gold)
    model = GoldAwareLabelModel(epochs=200).fit(L[rest], L[gold], y[gold])
    assert model.class_balance_source == "gold" and model.uncovered_source == "gold"
    assert abs(model.class_balance[1] - y[gold].mean()) < 0.01
    uncovered = ~(L != -1).any(axis=1)
    assert model.uncovered_proba[0] > 0.9 and abs(model.uncovered_proba[1] - y[uncovered].mean()) < 0.05
    no_gold = GoldAwareLabelModel(epochs=200).fit(L[rest])
    assert no_gold.class_balance_source == "label_model" and len(no_gold.uncovered_proba) == 2
