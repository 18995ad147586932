"""The model zoo. Models are plain modules; parallel strategies wrap them.

TextClassifier:  EmbeddingBag -> depth x residual MLP block -> linear head
    ids (T,), offsets (B,)  ->  (B, dim)  ->  (B, dim)  ->  (B, num_classes) logits

Its ``pipeline_layers()`` is the same model as a list of depth + 2 layers that
share its parameters, for the parallel strategies to split and shard:

    BagEmbedding: ids (B, L), bag_weight (B, L) -> (B, dim)   [padded input: splits on dim 0]
    Block x depth:                     (B, dim) -> (B, dim)
    head:                              (B, dim) -> (B, num_classes)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mlsys.spec import require

if TYPE_CHECKING:
    from mlsys.model.featurizer import HashingFeaturizer


@dataclass(frozen=True)
class TextClassifierConfig:
    num_buckets: int = 1 << 15
    dim: int = 64
    depth: int = 2
    num_classes: int = 2
    dropout: float = 0.1
    # Std of the embedding's normal init. nn.EmbeddingBag's own is 1, but 8 epochs of AdamW at lr 3e-3
    # (about 190 steps of at most ~lr each) move a weight by under 0.6: the random start would outweigh
    # what a row learns, and accuracy swung with the seed (84-91% on the Shakira test split).
    embed_init_std: float = 0.05

    def __post_init__(self):
        for name in ("num_buckets", "dim", "num_classes"):
            require(getattr(self, name) >= 2, "TextClassifierConfig", name, getattr(self, name), "use 2 or more")
        require(self.depth >= 0, "TextClassifierConfig", "depth", self.depth, "use 0 or more blocks")
        require(0.0 <= self.dropout < 1.0, "TextClassifierConfig", "dropout", self.dropout, "use a value in [0, 1)")
        require(self.embed_init_std > 0, "TextClassifierConfig", "embed_init_std", self.embed_init_std,
                "use a positive std")

    def to_json(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm residual MLP block: x + MLP(LN(x))."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, dim) -> (B, dim)
        return x + self.mlp(self.norm(x))


class BagEmbedding(nn.Module):
    """The classifier's EmbeddingBag on padded bags, so a batch splits into micro-batches along dim 0.

    sum_j bag_weight[b, j] * E[ids[b, j]] with bag_weight = 1/len on real tokens and 0 on padding
    equals the EmbeddingBag mean over the bag's tokens.
    """

    def __init__(self, embed: nn.EmbeddingBag):
        super().__init__()
        self.embed = embed

    def forward(self, ids: torch.Tensor, bag_weight: torch.Tensor) -> torch.Tensor:  # (B, L), (B, L) -> (B, dim)
        return F.embedding_bag(ids, self.embed.weight, mode="sum", per_sample_weights=bag_weight)


class TextClassifier(nn.Module):
    def __init__(self, config: TextClassifierConfig):
        super().__init__()
        self.config = config
        self.embed = nn.EmbeddingBag(config.num_buckets, config.dim, mode="mean")
        nn.init.normal_(self.embed.weight, std=config.embed_init_std)
        self.blocks = nn.ModuleList(Block(config.dim, config.dropout) for _ in range(config.depth))
        self.head = nn.Sequential(nn.LayerNorm(config.dim), nn.Linear(config.dim, config.num_classes))

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids, offsets)  # (B, dim)
        for block in self.blocks:
            x = block(x)
        return self.head(x)  # (B, num_classes)

    def pipeline_layers(self) -> list[nn.Module]:
        """The model as depth + 2 layers (embedding, blocks, head) sharing this model's parameters."""
        return [BagEmbedding(self.embed), *self.blocks, self.head]


@torch.inference_mode()
def predict_proba(model: nn.Module, featurizer: "HashingFeaturizer", texts: Sequence[str], batch_size: int = 4096) -> torch.Tensor:
    """(N, C) class probabilities."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        ids, offsets = featurizer.encode(texts[i : i + batch_size])
        out.append(torch.softmax(model(ids, offsets), dim=-1))
    return torch.cat(out) if out else torch.empty(0, getattr(model, "config").num_classes)
