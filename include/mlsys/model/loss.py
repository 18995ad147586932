"""Noise-aware loss: cross-entropy against soft labels, weighted per row.

    loss = sum_i w_i * CE(p_i, softmax(z_i)) / sum_i w_i

p_i is the label stage's ``label_proba`` (one-hot for gold rows) and w_i its
``weight``, so confident gold rows pull harder than uncertain weak ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def noise_aware_loss(logits: torch.Tensor, target_proba: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """logits (B, C), target_proba (B, C), weight (B,) -> scalar."""
    per_row = -(target_proba * F.log_softmax(logits, dim=-1)).sum(dim=-1)  # (B,)
    return (weight * per_row).sum() / weight.sum().clamp_min(1e-12)


def pack_target(target_proba: torch.Tensor, weight: torch.Tensor, total_weight: float | torch.Tensor) -> torch.Tensor:
    """(B, C), (B,) -> (B, C + 1): soft targets with each row's share of the batch's weight as the last column.

    Sharded strategies compute ``loss_share`` on a slice of the batch (a micro-batch, a DDP shard);
    the shares of all slices sum to ``noise_aware_loss`` of the whole batch.
    """
    total = torch.as_tensor(total_weight, dtype=weight.dtype).clamp_min(1e-12)
    return torch.cat([target_proba, (weight / total).unsqueeze(1)], dim=1)


def loss_share(logits: torch.Tensor, packed_target: torch.Tensor) -> torch.Tensor:
    """logits (b, C), packed_target (b, C + 1) from ``pack_target`` -> this slice's share of the batch loss."""
    proba, share = packed_target[:, :-1], packed_target[:, -1]
    return (share * -(proba * F.log_softmax(logits, dim=-1)).sum(dim=-1)).sum()
