"""Training examples from a labeled dataset (dev gold held out, uncovered rows, rebalancing) and the operating point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys.training import examples, operating_point


def _labeled(n_weak_pos=80, n_weak_neg=20, n_unc=100, n_gold_pos=10, n_gold_neg=30) -> pd.DataFrame:
    rows = []
    for i in range(n_weak_pos):
        rows.append(("w+%d" % i, 1, [0.1, 0.9], "weak", 0.8))
    for i in range(n_weak_neg):
        rows.append(("w-%d" % i, 0, [0.8, 0.2], "weak", 0.7))
    for i in range(n_unc):
        rows.append(("u%d" % i, -1, [0.5, 0.5], "unlabeled", 0.0))
    for i in range(n_gold_pos):
        rows.append(("g+%d" % i, 1, [0.0, 1.0], "gold", 1.0))
    for i in range(n_gold_neg):
        rows.append(("g-%d" % i, 0, [1.0, 0.0], "gold", 1.0))
    return pd.DataFrame(rows, columns=["text", "label", "label_proba", "label_source", "weight"])


EXTRA = {"class_balance": [0.75, 0.25], "class_balance_source": "gold", "uncovered_proba": [0.95, 0.05],
         "weak_quality": 0.9}


def test_half_the_gold_is_held_out_stratified_and_never_trains():
    ex = examples.prepare(_labeled(), EXTRA, "drop", rebalance=False, seed=0)
    assert len(ex.dev) == 20 and ex.dev["label"].value_counts().to_dict() == {0: 15, 1: 5}
    assert not set(ex.dev["text"]) & set(ex.train["text"])
    assert len(ex.train) == 100 + 20 and "unlabeled" not in set(ex.train["label_source"])


def test_uncovered_rows_train_on_the_gold_estimate_of_their_class():
    ex = examples.prepare(_labeled(), EXTRA, "prior", rebalance=False, seed=0)
    unc = ex.train[ex.train["label_source"] == "unlabeled"]
    assert len(unc) == 100
    assert all(p == [0.95, 0.05] for p in unc["label_proba"])
    assert unc["weight"].iloc[0] == pytest.approx(0.95 * 0.9)
    no_priors = examples.prepare(_labeled(), {}, "prior", rebalance=False, seed=0)
    assert "unlabeled" not in set(no_priors.train["label_source"]), "without the label stage's estimate: dropped"


def test_rebalancing_gives_the_classes_the_corpus_balance_and_keeps_the_total():
    before = examples.prepare(_labeled(), EXTRA, "drop", rebalance=False, seed=0).train
    share = examples.class_mass(before) / examples.class_mass(before).sum()
    assert share[1] > 0.6, "the covered rows over-represent class 1"
    after = examples.prepare(_labeled(), EXTRA, "drop", rebalance=True, seed=0).train
    mass = examples.class_mass(after)
    assert mass / mass.sum() == pytest.approx([0.75, 0.25], abs=1e-3)
    assert after["weight"].sum() == pytest.approx(before["weight"].sum())


def test_self_training_takes_only_confident_predictions():
    ex = examples.prepare(_labeled(n_unc=4), EXTRA, "self_train", rebalance=False, seed=0)
    proba = np.array([[0.99, 0.01], [0.6, 0.4], [0.02, 0.98], [0.5, 0.5]])
    pseudo = examples.pseudo_labels(ex.uncovered, proba, 0.9)
    assert pseudo["label_source"].tolist() == ["self_train", "unlabeled", "self_train", "unlabeled"]
    assert pseudo["label_proba"][0][0] > 0.99 and pseudo["label_proba"][1] == [0.95, 0.05]
    train = examples.prepare_self_training(ex, pseudo, rebalance=False)
    assert (train["label_source"] == "self_train").sum() == 2 and (train["label_source"] == "unlabeled").sum() == 2


def test_f1_operating_point_beats_argmax_on_shifted_scores():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(15, int), np.zeros(85, int)]
    p1 = np.r_[rng.uniform(0.2, 0.45, 15), rng.uniform(0.0, 0.3, 85)]  # positives score high, but under 0.5
    point = operating_point.choose(y, p1, "f1")
    assert point.threshold < 0.45 and point.metrics["f1"] > operating_point._prf(y, (p1 >= 0.5).astype(int))["f1"]
    assert operating_point.choose(y, p1, "argmax").threshold == 0.5


def test_precision_target_picks_the_lowest_cut_that_reaches_it():
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    p1 = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    point = operating_point.choose(y, p1, "precision", precision_target=1.0)
    assert 0.7 < point.threshold <= 0.8 and point.metrics["precision"] == 1.0
    assert 0.4 < operating_point.choose(y, p1, "precision", precision_target=0.75).threshold <= 0.6


def test_too_few_dev_positives_keep_argmax():
    point = operating_point.choose(np.array([1, 0, 0, 0]), np.array([0.2, 0.1, 0.1, 0.1]), "f1")
    assert point.threshold == 0.5 and point.rule == "f1:too_few_dev_rows"
