"""Materialised views: every layer's output on the base frame, and the patches of newer frames over them.

    base view of a layer    (1, C, H, W)   full inference on the base frame, kept
    delta of a layer        groups of patches: [(frame, box), ...] + a (n, C, h, w) tensor

Per position (``regions="pixels"``), a spatial view is a row buffer (H*W, C):
the layer's channels-last output itself (full inference runs channels-last),
or a copy where the output is in another layout; ``tensors`` holds the
(1, C, H, W) view over the same memory, and a frame's new values are written
into it in place (the frame becomes the base as it is computed)::

    rows[name]     (H*W, C)       gathered by position: one row per pixel (padding is filled after the gather)
    tensors[name]  (1, C, H, W)   the same memory, channels last

A frame's value of a layer is its base view overlaid with that frame's
patches. Readers never build it whole: ``read_windows`` copies only the
windows a next layer needs (padding outside the map), and ``commit`` writes a
frame's patches into the base views when that frame becomes the new base.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from mlsys.streaming.incremental.region import Box


class Delta:
    """One layer's patches for a micro-batch of frames, kept in the batched tensors they were computed in."""

    def __init__(self) -> None:
        self.groups: list[tuple[list[tuple[int, Box]], torch.Tensor]] = []
        self.by_frame: dict[int, list[tuple[Box, torch.Tensor]]] = defaultdict(list)

    def add(self, entries: list[tuple[int, Box]], values: torch.Tensor) -> None:  # values (n, C, h, w)
        self.groups.append((entries, values))
        for i, (frame, box) in enumerate(entries):
            self.by_frame[frame].append((box, values[i]))

    def boxes(self, frame: int) -> list[Box]:
        return [box for box, _ in self.by_frame.get(frame, ())]

    def area(self, frame: int) -> int:
        return sum(box.area for box in self.boxes(frame))


class Views:
    """The materialised base views of the layers that later layers read."""

    def __init__(self, tensors: dict[str, torch.Tensor], rows: dict[str, torch.Tensor] | None = None):
        self.tensors = tensors  # node name -> (1, C, H, W) for spatial layers, (1, ...) otherwise
        self.rows = rows or {}  # node name -> (H*W + 1, C) buffer behind tensors[name] (per-position views)

    @classmethod
    def by_rows(cls, tensors: dict[str, torch.Tensor], spatial: set[str]) -> Views:
        """Views whose ``spatial`` maps are row buffers (see the module doc); the rest kept as they are."""
        kept, rows = dict(tensors), {}
        for name in spatial:
            t = tensors[name]
            _, c, h, w = t.shape
            if t.is_contiguous(memory_format=torch.channels_last):
                rows[name] = t[0].permute(1, 2, 0).view(h * w, c)  # the same memory: no copy
            else:
                rows[name] = t[0].permute(1, 2, 0).reshape(h * w, c).clone()
                kept[name] = rows[name].view(h, w, c).permute(2, 0, 1)[None]
        return cls(kept, rows)

    def read_windows(
        self, name: str, delta: Delta | None, wanted: list[tuple[int, Box]], pad_value: float = 0.0
    ) -> torch.Tensor:
        """The frame-overlaid values of ``name`` in each (frame, window) of ``wanted``: (n, C, h, w), all one size."""
        base = self.tensors[name][0]  # (C, H, W)
        c, h, w = base.shape
        wh, ww = wanted[0][1].h, wanted[0][1].w
        out = torch.empty(len(wanted), c, wh, ww, dtype=base.dtype)
        for i, (frame, win) in enumerate(wanted):
            inside = win.clip(h, w)
            if inside is None or inside.area < win.area:
                out[i].fill_(pad_value)
            if inside is None:
                continue
            oy, ox = inside.y0 - win.y0, inside.x0 - win.x0
            out[i, :, oy:oy + inside.h, ox:ox + inside.w] = base[:, inside.y0:inside.y1, inside.x0:inside.x1]
            if delta is None:
                continue
            iy0, iy1, ix0, ix1 = inside.y0, inside.y1, inside.x0, inside.x1
            for box, patch in delta.by_frame.get(frame, ()):
                y0, y1, x0, x1 = max(box.y0, iy0), min(box.y1, iy1), max(box.x0, ix0), min(box.x1, ix1)
                if y0 < y1 and x0 < x1:
                    out[i, :, y0 - win.y0:y1 - win.y0, x0 - win.x0:x1 - win.x0] = (
                        patch[:, y0 - box.y0:y1 - box.y0, x0 - box.x0:x1 - box.x0])
        return out

    def materialise(self, name: str, delta: Delta | None, frames: list[int]) -> torch.Tensor:
        """The whole map of ``name`` for each frame: (len(frames), C, H, W)."""
        base = self.tensors[name]
        out = base.expand(len(frames), *base.shape[1:]).clone()
        if delta is not None:
            for i, frame in enumerate(frames):
                for box, patch in delta.by_frame.get(frame, ()):
                    out[i, :, box.y0:box.y1, box.x0:box.x1] = patch
        return out

    def commit(self, name: str, delta: Delta, frame: int) -> None:
        """Make ``frame``'s value of ``name`` the base view."""
        base = self.tensors[name][0]
        for box, patch in delta.by_frame.get(frame, ()):
            base[:, box.y0:box.y1, box.x0:box.x1] = patch
