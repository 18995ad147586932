"""The single-device training loop on a tiny separable dataset."""

from __future__ import annotations

import pytest
import torch

from mlsys.model.featurizer import HashingFeaturizer
from mlsys.model.text_classifier import (
    TextClassifier,
    TextClassifierConfig,
    predict_proba,
)
from mlsys.training.trainer import TrainConfig, train

SPAM = ["buy cheap pills now", "free money click here", "win a free prize now", "cheap watches buy now",
        "click here for free money", "subscribe to my channel now"]
HAM = ["i love this song", "beautiful voice", "this song is great", "love the video",
       "great song so beautiful", "what a voice"]
TEXTS = SPAM + HAM
LABELS = torch.tensor([1] * len(SPAM) + [0] * len(HAM))


def _fit(epochs: int = 30, seed: int = 0, on_metrics=None, weight=None):
    torch.manual_seed(seed)
    model = TextClassifier(TextClassifierConfig(num_buckets=512, dim=16, depth=1))
    feat = HashingFeaturizer(num_buckets=512)
    proba = torch.nn.functional.one_hot(LABELS, 2).float()
    weight = torch.ones(len(TEXTS)) if weight is None else weight
    cfg = TrainConfig(epochs=epochs, batch_size=4, lr=1e-2, seed=seed, log_every=2)
    summary = train(model, feat, TEXTS, proba, weight, cfg, on_metrics)
    return model, feat, summary


def test_loss_goes_down_and_the_data_is_learned():
    model, feat, summary = _fit()
    losses = [h["train_loss"] for h in summary["history"]]
    assert len(losses) == 30 and summary["steps"] == 30 * 3
    assert losses[-1] < 0.5 * losses[0]
    assert summary["final_loss"] == losses[-1]
    proba = predict_proba(model, feat, TEXTS)
    assert proba.shape == (12, 2) and torch.allclose(proba.sum(dim=1), torch.ones(12), atol=1e-6)
    assert torch.equal(proba.argmax(dim=1), LABELS)


def test_same_seed_gives_identical_weights():
    a, _, sa = _fit(epochs=5)
    b, _, sb = _fit(epochs=5)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert [h["train_loss"] for h in sa["history"]] == [h["train_loss"] for h in sb["history"]]


def test_different_seed_gives_different_weights():
    a, _, _ = _fit(epochs=2, seed=0)
    b, _, _ = _fit(epochs=2, seed=1)
    assert not torch.equal(a.head[1].weight, b.head[1].weight)


def test_metrics_callback_gets_steps_and_epochs():
    calls = []
    _fit(epochs=2, on_metrics=lambda metrics, step: calls.append((dict(metrics), step)))
    step_calls = [(m, s) for m, s in calls if "train_loss_step" in m]
    epoch_calls = [(m, s) for m, s in calls if "train_loss" in m]
    assert [s for _, s in step_calls] == [2, 4, 6]  # log_every=2, 3 steps per epoch
    assert [(m["epoch"], s) for m, s in epoch_calls] == [(0, 3), (1, 6)]
    assert all(m["samples_per_s"] > 0 for m, _ in epoch_calls)


def test_zero_weight_rows_do_not_train():
    # Whatever labels the weight-0 rows carry, training ends with the very same weights.
    weight = torch.tensor([1.0] * len(SPAM) + [0.0] * len(HAM))
    torch.manual_seed(0)
    model = TextClassifier(TextClassifierConfig(num_buckets=512, dim=16, depth=1))
    feat = HashingFeaturizer(num_buckets=512)
    proba_a = torch.tensor([[0.0, 1.0]] * len(TEXTS))  # the ham rows mislabeled as spam...
    proba_b = proba_a.clone()
    proba_b[len(SPAM):] = torch.tensor([1.0, 0.0])  # same rows, other (still ignored) labels
    cfg = TrainConfig(epochs=3, batch_size=4, lr=1e-2)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, feat, TEXTS, proba_a, weight, cfg)
    a = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(init)
    train(model, feat, TEXTS, proba_b, weight, cfg)
    for k, v in model.state_dict().items():
        assert torch.allclose(v, a[k], atol=1e-6), k


def test_predict_proba_of_nothing():
    model = TextClassifier(TextClassifierConfig(num_buckets=64, dim=4))
    assert predict_proba(model, HashingFeaturizer(num_buckets=64), []).shape == (0, 2)


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("lr", -1.0)])
def test_bad_config_names_the_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}={value} is invalid"):
        TrainConfig(**{field: value})


def test_log_every_zero_is_rejected():
    with pytest.raises(ValueError, match=r"TrainConfig\.log_every=0"):
        cfg = TrainConfig(log_every=0)
        model = TextClassifier(TextClassifierConfig(num_buckets=64, dim=4))
        train(model, HashingFeaturizer(num_buckets=64), ["a", "b"], torch.tensor([[1.0, 0.0]] * 2), torch.ones(2),
              cfg, lambda m, s: None)
