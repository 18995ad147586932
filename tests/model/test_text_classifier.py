"""The text classifier and its config."""

from __future__ import annotations

import pytest
import torch

from mlsys.model.featurizer import HashingFeaturizer
from mlsys.model.text_classifier import TextClassifier, TextClassifierConfig


@pytest.mark.parametrize("depth, classes", [(0, 2), (2, 2), (3, 5)])
def test_output_shape(depth, classes):
    cfg = TextClassifierConfig(num_buckets=256, dim=8, depth=depth, num_classes=classes)
    model = TextClassifier(cfg)
    ids, offsets = HashingFeaturizer(num_buckets=256).encode(["spam spam", "ham", "", "a b c d"])
    logits = model(ids, offsets)
    assert logits.shape == (4, classes) and logits.dtype == torch.float32
    assert len(model.blocks) == depth


def test_eval_mode_is_deterministic():
    model = TextClassifier(TextClassifierConfig(num_buckets=64, dim=4, dropout=0.5)).eval()
    ids, offsets = HashingFeaturizer(num_buckets=64).encode(["hello world", "bye"])
    assert torch.equal(model(ids, offsets), model(ids, offsets))


def test_config_round_trips_through_json():
    cfg = TextClassifierConfig(num_buckets=128, dim=16, depth=1, dropout=0.2, embed_init_std=0.1)
    assert TextClassifierConfig(**cfg.to_json()) == cfg


def test_embedding_starts_small():
    """Not nn.EmbeddingBag's N(0, 1): a row's random start must not outweigh what training moves it by."""
    torch.manual_seed(0)
    weight = TextClassifier(TextClassifierConfig(num_buckets=4096, dim=64)).embed.weight.detach()
    assert float(weight.std()) == pytest.approx(0.05, rel=0.02)
    torch.manual_seed(0)
    weight = TextClassifier(TextClassifierConfig(num_buckets=4096, dim=64, embed_init_std=0.5)).embed.weight.detach()
    assert float(weight.std()) == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize(
    "field, value",
    [("num_buckets", 1), ("dim", 0), ("num_classes", 1), ("depth", -1), ("dropout", 1.0), ("dropout", -0.1),
     ("embed_init_std", 0.0)],
)
def test_bad_config_names_the_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"TextClassifierConfig\.{field}={value} is invalid"):
        TextClassifierConfig(**{field: value})
