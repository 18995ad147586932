"""The vectorised featuriser gives exactly HashingFeaturizer's ids and offsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlsys.bench.workload import comments
from mlsys.model import featurizer, vector_featurizer
from mlsys.model.featurizer import TOKEN, HashingFeaturizer
from mlsys.model.vector_featurizer import MAX_LEN, VectorFeaturizer

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


@pytest.mark.parametrize("num_buckets,bigrams,char_ngrams",
                         [(1 << 15, True, (2, 3)), (1 << 12, False, (3,)), (7, True, (1, 2, 3, 4, 5)), (1000, True, (2, 6))])
def test_same_ids_with_character_ngrams_on_real_comments(num_buckets, bigrams, char_ngrams):
    _same(comments(), HashingFeaturizer(num_buckets=num_buckets, bigrams=bigrams, char_ngrams=char_ngrams))


@pytest.mark.parametrize("char_ngrams", [(), (2, 3), (1, 4, 16)])
@pytest.mark.parametrize("texts", [EDGE, EDGE[::-1], [""], ["", ""], ["abc"], ["ab", "cd"], ["", "!", "a"]])
def test_same_ids_on_edge_cases(texts, char_ngrams):
    _same(texts, HashingFeaturizer(char_ngrams=char_ngrams))


@pytest.mark.parametrize("char_ngrams", [(), (2, 3), (1, 3, 5)])
def test_same_ids_on_random_text(char_ngrams):
    rng = np.random.default_rng(1)
    alphabet = list("abcXYZ019' -.,\n<>#") + ["é", "İ", "\u212a", "😀", "ß", "Ω"]
    texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 120))) for _ in range(500)]
    _same(texts, HashingFeaturizer(num_buckets=1000, char_ngrams=char_ngrams))


def test_both_featurizers_prefix_character_ngrams_alike():
    assert vector_featurizer.CHAR_PREFIX == featurizer.CHAR_PREFIX


def test_only_two_non_ascii_characters_lower_to_token_characters():
    """The featuriser special-cases U+0130 and U+212A; every other non-ASCII character separates tokens."""
    special = {cp for cp in range(0x80, 0x110000) if TOKEN.search(chr(cp).lower())}
    assert special == {0x130, 0x212A}


def test_buffers_with_an_offset_and_empty_input():
    texts = ["hello world", "spam spam eggs", "x"]
    raw = b"JUNK" + "".join(texts).encode()
    offsets = np.array([4, 15, 29, 30], dtype=np.int64)
    for sizes in ((), (2, 3)):
        ids, starts = VectorFeaturizer(char_ngrams=sizes).encode_utf8(np.frombuffer(raw, dtype=np.uint8)[4:], offsets - 4)
        want_ids, want_starts = HashingFeaturizer(char_ngrams=sizes).encode(texts)
        assert ids.tolist() == want_ids.tolist() and starts.tolist() == want_starts.tolist()
    vf = VectorFeaturizer(char_ngrams=(2, 3))
    ids, starts = vf.encode_utf8(np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64))
    assert ids.size == 0 and starts.size == 0


def test_bad_bucket_count_names_the_field():
    with pytest.raises(ValueError, match=r"VectorFeaturizer\.num_buckets=1"):
        VectorFeaturizer(num_buckets=1)
    with pytest.raises(ValueError, match=r"VectorFeaturizer\.char_ngrams=\(3, 2\) is invalid"):
        VectorFeaturizer(char_ngrams=(3, 2))
