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
