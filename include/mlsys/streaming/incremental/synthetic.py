"""A synthetic fixed-camera stream: a static background and one moving object of a given area share.

The object is a textured square that slides across the frame and bounces at
the borders, ``speed`` pixels a frame, so consecutive frames differ in the
union of its old and new positions only.
"""

from __future__ import annotations

import math

import torch


def synthetic_frames(n: int, size: int = 224, object_share: float = 0.05, speed: int = 4, seed: int = 0) -> torch.Tensor:
    """``n`` frames (n, 3, size, size) in [0, 1]."""
    if not 0 < object_share < 1:
        raise ValueError(f"object_share={object_share!r} is invalid: use a share of the frame in (0, 1), e.g. 0.05")
    if n < 1 or size < 8:
        raise ValueError(f"n={n!r}, size={size!r} are invalid: use at least 1 frame of at least 8x8 pixels")
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    background = torch.stack([0.5 + 0.3 * torch.sin(6 * xx + 2 * c) * torch.cos(4 * yy - c) for c in range(3)])
    background = (background + 0.08 * torch.rand(3, size, size, generator=g)).clamp(0, 1)
    side = max(1, round(math.sqrt(object_share) * size))
    texture = torch.rand(3, side, side, generator=g) * 0.5 + torch.tensor([0.5, 0.1, 0.1])[:, None, None]
    span_x, span_y = size - side, size - side
    frames = torch.empty(n, 3, size, size)
    for t in range(n):
        x = abs((t * speed) % (2 * span_x) - span_x) if span_x else 0  # bounce between the borders
        y = abs((t * speed // 2 + span_y // 3) % (2 * span_y) - span_y) if span_y else 0
        frames[t] = background
        frames[t, :, y:y + side, x:x + side] = texture
    return frames
