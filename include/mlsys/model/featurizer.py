"""Hashed bag-of-words features for text: no vocabulary to fit, store or ship.

Each token, each pair of neighbouring tokens and (optionally) each character
n-gram of a token wrapped as ``<token>`` maps to one of ``num_buckets`` ids
through CRC32, which, unlike Python's ``hash``, is the same in every process.
A text's ids are laid out as

    [unigrams..., bigrams..., character n-grams of each token by start, then size...]

Character n-grams carry spelling: "subscribe", "subscribed" and "subscribeee"
share most of theirs, and so do obfuscated URLs and numbers. They are hashed
with a ``#`` prefix, so the n-gram "abc" inside a word is not the word "abc".
Output is the (ids, offsets) pair nn.EmbeddingBag takes.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Sequence

import torch

from mlsys.spec import require

TOKEN = re.compile(r"[a-z0-9']+")
CHAR_PREFIX = "#"  # hashed before every character n-gram
MAX_CHAR_NGRAM = 16
DEFAULT_CHAR_NGRAMS = (2, 3)  # what the train stage uses unless told otherwise (TrainSpec.char_ngrams)


def valid_char_ngrams(sizes: Sequence[int]) -> bool:
    """Character n-gram sizes are increasing whole numbers between 1 and MAX_CHAR_NGRAM."""
    return all(isinstance(n, int) and 1 <= n <= MAX_CHAR_NGRAM for n in sizes) and list(sizes) == sorted(set(sizes))


def check_char_ngrams(owner: str, value: Sequence[int]) -> tuple[int, ...]:
    """``value`` as a tuple of sizes, or a ValueError naming ``owner``'s field, the value and the fix."""
    sizes = tuple(value)  # a logged config gives a JSON list
    require(valid_char_ngrams(sizes), owner, "char_ngrams", value,
            f"give increasing sizes between 1 and {MAX_CHAR_NGRAM}, e.g. (2, 3), or () for none")
    return sizes


@dataclass(frozen=True)
class HashingFeaturizer:
    num_buckets: int = 1 << 15
    bigrams: bool = True
    # Character n-gram sizes over each "<token>", e.g. (2, 3); () = none. The default stays () so that a
    # config logged before character n-grams existed loads as the featurizer it was trained with.
    char_ngrams: tuple[int, ...] = ()

    def __post_init__(self):
        if self.num_buckets < 2:
            require(False, "HashingFeaturizer", "num_buckets", self.num_buckets, "use at least 2 buckets")
        object.__setattr__(self, "char_ngrams", check_char_ngrams("HashingFeaturizer", self.char_ngrams))

    def token_ids(self, text: str) -> list[int]:
        tokens = TOKEN.findall(text.lower())
        grams = tokens + ([f"{a} {b}" for a, b in zip(tokens, tokens[1:])] if self.bigrams else [])
        if self.char_ngrams:
            grams.extend(CHAR_PREFIX + w[i : i + n] for w in (f"<{t}>" for t in tokens)
                         for i in range(len(w)) for n in self.char_ngrams if i + n <= len(w))
        return [zlib.crc32(g.encode()) % self.num_buckets for g in grams] or [0]

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids: (total_tokens,) int64; offsets: (batch,) int64 start of each text in ids."""
        ids: list[int] = []
        offsets: list[int] = []
        for text in texts:
            offsets.append(len(ids))
            ids.extend(self.token_ids(text))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)

    def encode_padded(self, texts: Sequence[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, L) int64 padded with 0, bag_weight (B, L) float32: 1/len on a text's ids, 0 on padding.

        The input of ``BagEmbedding``: fixed-shape rows that split into micro-batches. ``length`` pads
        to a fixed L (at least the longest text's id count).
        """
        rows = [self.token_ids(t) for t in texts]
        width = max([len(r) for r in rows] + [1])
        if length is not None:
            if length < width:
                raise ValueError(f"encode_padded length={length} is too short: the longest text has {width} ids")
            width = length
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        weight = torch.zeros(len(rows), width, dtype=torch.float32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            weight[i, : len(r)] = 1.0 / len(r)
        return ids, weight
