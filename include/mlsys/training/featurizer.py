"""Hashed bag-of-words features for text: no vocabulary to fit, store or ship.

Each token (and each pair of neighbouring tokens) maps to one of
``num_buckets`` ids through CRC32, which, unlike Python's ``hash``, is the
same in every process. Output is the (ids, offsets) pair nn.EmbeddingBag takes.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Sequence

import torch

TOKEN = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class HashingFeaturizer:
    num_buckets: int = 1 << 15
    bigrams: bool = True

    def __post_init__(self):
        if self.num_buckets < 2:
            raise ValueError(f"HashingFeaturizer.num_buckets={self.num_buckets} is invalid: use at least 2 buckets")

    def token_ids(self, text: str) -> list[int]:
        tokens = TOKEN.findall(text.lower())
        grams = tokens + ([f"{a} {b}" for a, b in zip(tokens, tokens[1:])] if self.bigrams else [])
        return [zlib.crc32(g.encode()) % self.num_buckets for g in grams] or [0]

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids: (total_tokens,) int64; offsets: (batch,) int64 start of each text in ids."""
        ids: list[int] = []
        offsets: list[int] = []
        for text in texts:
            offsets.append(len(ids))
            ids.extend(self.token_ids(text))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)
