"""The hashing featurizer: stable ids in every process, bucket range, EmbeddingBag offsets, character n-grams."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zlib

import pytest
import torch

from mlsys.model.featurizer import HashingFeaturizer

TEXTS = ["Check out my channel!!", "I love this song", "", "  ", "Ünïcödé wörds and 123 numbers", "don't stop"]


def test_ids_are_stable_across_processes():
    feat = HashingFeaturizer(num_buckets=1 << 12, char_ngrams=(2, 3))
    here = [feat.token_ids(t) for t in TEXTS]
    code = (
        "import json, sys\n"
        "from mlsys.model.featurizer import HashingFeaturizer\n"
        "feat = HashingFeaturizer(num_buckets=1 << 12, char_ngrams=(2, 3))\n"
        "print(json.dumps([feat.token_ids(t) for t in json.loads(sys.argv[1])]))\n"
    )
    for seed in ("1", "2"):  # Python's own hash() would differ between these processes
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code, json.dumps(TEXTS)], capture_output=True, text=True,
                             env=env, check=True, timeout=120)
        assert json.loads(out.stdout) == here


def test_ids_are_crc32_of_tokens_and_bigrams():
    feat = HashingFeaturizer(num_buckets=1000)
    expected = [zlib.crc32(g.encode()) % 1000 for g in ("check", "out", "my", "check out", "out my")]
    assert feat.token_ids("CHECK out, my") == expected
    assert HashingFeaturizer(num_buckets=1000, bigrams=False).token_ids("CHECK out, my") == expected[:3]


def test_character_ngrams_follow_the_words_by_token_start_and_size():
    feat = HashingFeaturizer(num_buckets=1000, char_ngrams=(2, 3))
    grams = ["ab", "c", "ab c",
             "<a", "<ab", "ab", "ab>", "b>",  # "<ab>" from each start: its 2-gram, then its 3-gram
             "<c", "<c>", "c>"]
    expected = [zlib.crc32(g.encode()) % 1000 for g in grams[:3]] + [zlib.crc32(f"#{g}".encode()) % 1000 for g in grams[3:]]
    assert feat.token_ids("AB, c!") == expected
    assert HashingFeaturizer(num_buckets=1000, bigrams=False, char_ngrams=(2, 3)).token_ids("AB, c!") == \
        expected[:2] + expected[3:]
    # a size longer than "<token>" gives nothing for that token; a text without tokens still gets [0]
    assert HashingFeaturizer(num_buckets=1000, char_ngrams=(4,)).token_ids("c") == [zlib.crc32(b"c") % 1000]
    assert feat.token_ids("?!") == [0]


def test_a_character_ngram_is_not_the_word_it_spells():
    feat = HashingFeaturizer(num_buckets=1 << 20, bigrams=False, char_ngrams=(3,))
    word, *grams = feat.token_ids("abc")  # "<ab", "abc", "bc>"
    assert grams[1] != word and grams[1] == zlib.crc32(b"#abc") % (1 << 20)


def test_config_round_trips_through_json_and_an_old_config_has_no_character_ngrams():
    feat = HashingFeaturizer(num_buckets=1 << 12, char_ngrams=(2, 3))
    again = HashingFeaturizer(**json.loads(json.dumps(dataclasses.asdict(feat))))  # as the pyfunc model loads it
    assert again == feat and again.char_ngrams == (2, 3)
    assert again.token_ids(TEXTS[0]) == feat.token_ids(TEXTS[0])
    old = HashingFeaturizer(**{"num_buckets": 1 << 12, "bigrams": True})  # logged before char_ngrams existed
    assert old.char_ngrams == () and len(old.token_ids("check out")) == 3


@pytest.mark.parametrize("sizes", [(0,), (3, 2), (2, 2), (17,), ("2",)])
def test_bad_character_ngram_sizes_name_the_value(sizes):
    with pytest.raises(ValueError, match=r"HashingFeaturizer\.char_ngrams=.* is invalid: give increasing sizes"):
        HashingFeaturizer(char_ngrams=sizes)


@pytest.mark.parametrize("buckets", [2, 7, 1 << 15])
def test_ids_are_within_the_bucket_range(buckets):
    feat = HashingFeaturizer(num_buckets=buckets, char_ngrams=(2, 3))
    ids, _ = feat.encode(TEXTS * 3)
    assert ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < buckets


def test_text_without_tokens_gets_one_id():
    feat = HashingFeaturizer()
    assert feat.token_ids("") == [0] and feat.token_ids("!!! ...") == [0]


def test_offsets_mark_the_start_of_each_text():
    feat = HashingFeaturizer(num_buckets=100)
    texts = ["a b", "", "c d e", "f"]
    ids, offsets = feat.encode(texts)
    # 2 tokens + 1 bigram, 1 (the empty text's id), 3 tokens + 2 bigrams, 1 token
    assert offsets.tolist() == [0, 3, 4, 9]
    assert ids.shape == (10,) and offsets.dtype == torch.long
    assert ids[4:9].tolist() == feat.token_ids("c d e")
    bag = torch.nn.EmbeddingBag(100, 3, mode="mean")
    assert bag(ids, offsets).shape == (4, 3)


def test_empty_batch():
    ids, offsets = HashingFeaturizer().encode([])
    assert ids.shape == (0,) and offsets.shape == (0,)


def test_too_few_buckets_names_the_value():
    with pytest.raises(ValueError, match=r"HashingFeaturizer\.num_buckets=1 is invalid"):
        HashingFeaturizer(num_buckets=1)
