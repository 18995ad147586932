"""The vectorised featuriser gives exactly HashingFeaturizer's ids and offsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlsys.inference.vector_featurizer import MAX_LEN, VectorFeaturizer
from mlsys.inference.workload import comments
from mlsys.training.featurizer import TOKEN, HashingFeaturizer

EDGE = ["", "!!!", "a", "A b", "abc", "def", "İstanbul İi", "\u212aelvin a\u212ab", "x" * (MAX_LEN + 40) + " y " + "z" * 70,
        "y " + "q" * (MAX_LEN + 1), "q" * MAX_LEN + " " + "r" * MAX_LEN, "don't STOP 123", "\n\t", "émile zola ß ΣΑΣ",
        "😀a😀b", "a'b''c", "iİ", "  lead and trail  ", "ALL CAPS SHOUT", "1 2 3 4 5 6 7 8 9 10"]


def _same(texts, featurizer: HashingFeaturizer) -> None:
    want_ids, want_offsets = featurizer.encode(texts)
    ids, offsets = VectorFeaturizer.like(featurizer).encode(texts)
    assert torch.equal(ids, want_ids)
    assert torch.equal(offsets, want_offsets)


@pytest.mark.parametrize("num_buckets,bigrams", [(1 << 15, True), (1 << 12, False), (7, True), (2, False)])
def test_same_ids_as_the_python_featurizer_on_real_comments(num_buckets, bigrams):
    _same(comments(), HashingFeaturizer(num_buckets=num_buckets, bigrams=bigrams))


@pytest.mark.parametrize("texts", [EDGE, EDGE[::-1], [""], ["", ""], ["abc"], ["ab", "cd"]])
def test_same_ids_on_edge_cases(texts):
    _same(texts, HashingFeaturizer())


def test_same_ids_on_random_text():
    rng = np.random.default_rng(1)
    alphabet = list("abcXYZ019' -.,\n") + ["é", "İ", "\u212a", "😀", "ß", "Ω"]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 120))) for _ in range(500)]
    _same(texts, HashingFeaturizer(num_buckets=1000))


def test_only_two_non_ascii_characters_lower_to_token_characters():
    """The featuriser special-cases U+0130 and U+212A; every other non-ASCII character separates tokens."""
    special = {cp for cp in range(0x80, 0x110000) if TOKEN.search(chr(cp).lower())}
    assert special == {0x130, 0x212A}


def test_buffers_with_an_offset_and_empty_input():
    vf = VectorFeaturizer()
    texts = ["hello world", "spam spam eggs", "x"]
    raw = b"JUNK" + "".join(texts).encode()
    offsets = np.array([4, 15, 29, 30], dtype=np.int64)
    ids, starts = vf.encode_utf8(np.frombuffer(raw, dtype=np.uint8)[4:], offsets - 4)
    want_ids, want_starts = HashingFeaturizer().encode(texts)
    assert ids.tolist() == want_ids.tolist() and starts.tolist() == want_starts.tolist()
    ids, starts = vf.encode_utf8(np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64))
    assert ids.size == 0 and starts.size == 0


def test_bad_bucket_count_names_the_field():
    with pytest.raises(ValueError, match=r"VectorFeaturizer\.num_buckets=1"):
        VectorFeaturizer(num_buckets=1)
