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
