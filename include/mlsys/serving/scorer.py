"""The scorer: UTF-8 text buffers in, predicted class and probabilities out.

It pairs a TextClassifier with the VectorFeaturizer twin of its
HashingFeaturizer and runs the forward pass under ``torch.inference_mode`` in
fixed-size micro-batches. Fixed sizes matter twice: throughput (the forward pass
is cheap next to featurisation, so big batches amortise the Python overhead) and
reproducibility (the same row in the same position of a same-size batch gives
bit-identical floats, which keeps shard re-runs and merges content-addressed).

Imports only numpy and torch (an engine module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mlsys.model.vector_featurizer import VectorFeaturizer

SMALL_BATCH = 16


@dataclass(frozen=True)
class Scores:
    prediction: np.ndarray  # (N,) int64
    proba: np.ndarray  # (N, C) float32

    def __len__(self) -> int:
        return int(self.prediction.size)


class Scorer:
    def __init__(self, model: torch.nn.Module, featurizer, label: str = "", threshold: float | None = None):
        self.model = model.eval()
        self.featurizer = VectorFeaturizer.like(featurizer)
        self.small_featurizer = featurizer  # per-text Python: less fixed cost below SMALL_BATCH texts, same ids
        self.num_classes = int(getattr(model, "config").num_classes)
        self.label = label  # e.g. "name/version": what made these scores
        # the model's operating point (training/operating_point.py): class 1 when P(class 1) >= threshold
        self.threshold = threshold if self.num_classes == 2 else None

    def score_utf8(self, data: np.ndarray, offsets: np.ndarray) -> Scores:
        """data: (B,) uint8; offsets: (N+1,) int64 -> Scores for N texts."""
        ids, starts = self.featurizer.encode_utf8(data, offsets)
        return self._forward(torch.from_numpy(ids), torch.from_numpy(starts))

    def _forward(self, ids: torch.Tensor, starts: torch.Tensor) -> Scores:
        with torch.inference_mode():
            logits = self.model(ids, starts)  # (N, C)
            proba = torch.softmax(logits, dim=-1).numpy()
        if self.threshold is not None:
            return Scores(prediction=(proba[:, 1] >= self.threshold).astype(np.int64), proba=proba)
        return Scores(prediction=proba.argmax(axis=1).astype(np.int64), proba=proba)

    def score_texts(self, texts: Sequence[str]) -> Scores:
        if len(texts) < SMALL_BATCH:
            ids, starts = self.small_featurizer.encode(texts)
            return self._forward(ids, starts)
        encoded = [t.encode() for t in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return self.score_utf8(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)
