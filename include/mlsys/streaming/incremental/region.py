"""Regions of a feature map: boxes, change detection into several boxes, box merging.

A region is a list of half-open boxes ``[y0, y1) x [x0, x1)``. Changes between
video frames are scattered (a face, a hand, compression noise), so one
bounding box would cover most of the frame: the detector marks changed pixels
with a per-pixel threshold, counts them per tile, and turns the changed tiles
into a few rectangles (runs of tiles in a row, stacked where rows agree)::

    tiles        rows -> runs        runs stacked
    . # # . .    [1,3)               +---+
    . # # . #    [1,3) [4,5)         |   |  +-+
    . . . . #    [4,5)               +---+  | |
                                            +-+
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Box:
    """Rows ``[y0, y1)`` and columns ``[x0, x1)`` of a 2-D map."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return max(0, self.h) * max(0, self.w)

    def intersect(self, other: "Box") -> "Box | None":
        y0, y1 = max(self.y0, other.y0), min(self.y1, other.y1)
        x0, x1 = max(self.x0, other.x0), min(self.x1, other.x1)
        return Box(y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None

    def hull(self, other: "Box") -> "Box":
        return Box(min(self.y0, other.y0), max(self.y1, other.y1), min(self.x0, other.x0), max(self.x1, other.x1))

    def clip(self, h: int, w: int) -> "Box | None":
        return self.intersect(Box(0, h, 0, w))


def union_area(boxes: list[Box]) -> int:
    """Area covered by the union of ``boxes`` (coordinate compression; a few dozen boxes)."""
    if not boxes:
        return 0
    ys = sorted({b.y0 for b in boxes} | {b.y1 for b in boxes})
    total = 0
    for ya, yb in zip(ys, ys[1:]):
        spans = sorted((b.x0, b.x1) for b in boxes if b.y0 <= ya and b.y1 >= yb)
        covered, end = 0, None
        for a, b in spans:
            if end is None or a > end:
                covered += b - a
                end = b
            elif b > end:
                covered += b - end
                end = b
        total += covered * (yb - ya)
    return total


def merge_boxes(boxes: list[Box], slack: float = 1.25, max_boxes: int = 64, free_area: float = 0.0) -> list[Box]:
    """Merge boxes whose hull costs at most ``slack`` x the area they really cover, or at most ``free_area`` more.

    Overlapping halos of neighbouring patches merge cheaply; the area a merged
    box really covers is tracked, so chains of merges cannot pile up waste.
    Fewer, larger boxes mean fewer kernel calls; a hull's extra area is
    computed for real and counted in the FLOPs. ``free_area`` is what one call
    costs by itself, in output positions: a deep 512-channel conv streams its
    9 MB of weights for every call, however small the patch, so two patches a
    few positions apart are cheaper as one call on their hull, when the hull is
    no larger than the two boxes plus that cost. Past ``max_boxes``, the pair
    with the cheapest hull merges regardless, so the number of calls stays bounded.
    """
    # (y0, y1, x0, x1, area really covered): plain tuples, this runs for every layer of every frame
    out = [(b.y0, b.y1, b.x0, b.x1, float(b.area)) for b in dict.fromkeys(boxes)]
    i = 0
    while i < len(out):
        grew = False
        j = i + 1
        while j < len(out):
            ay0, ay1, ax0, ax1, ca = out[i]
            by0, by1, bx0, bx1, cb = out[j]
            iy, ix = min(ay1, by1) - max(ay0, by0), min(ax1, bx1) - max(ax0, bx0)
            covered = ca + cb - (iy * ix if iy > 0 and ix > 0 else 0)
            hy0, hy1, hx0, hx1 = min(ay0, by0), max(ay1, by1), min(ax0, bx0), max(ax1, bx1)
            hull = (hy1 - hy0) * (hx1 - hx0)
            # the second test: one call on the hull costs no more than a call on each box (never a chain of waste)
            if hull <= slack * covered or hull <= (ay1 - ay0) * (ax1 - ax0) + (by1 - by0) * (bx1 - bx0) + free_area:
                out[i] = (hy0, hy1, hx0, hx1, min(covered, float(hull)))
                del out[j]
                grew = True
            else:
                j += 1
        if not grew:
            i += 1  # a box that grew is compared again with every box after it
    while len(out) > max_boxes:
        _, i, j = min(((max(a[1], b[1]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[2], b[2])) - a[4] - b[4], i, j)
                      for i, a in enumerate(out) for j, b in enumerate(out) if j > i)
        a, b = out[i], out[j]
        out[i] = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]), a[4] + b[4])
        del out[j]
    return [Box(y0, y1, x0, x1) for y0, y1, x0, x1, _ in out]


def tile_boxes(tiles: torch.Tensor, tile: int, h: int, w: int) -> list[Box]:
    """Rectangles covering the True cells of a (Th, Tw) tile mask, in pixel coordinates clipped to (h, w)."""
    rows = tiles.cpu().tolist()
    open_runs: dict[tuple[int, int], int] = {}  # (x0, x1) in tiles -> first tile row
    boxes: list[Box] = []
    for ty, row in enumerate(rows + [[False] * (len(rows[0]) if rows else 0)]):
        runs, start = set(), None
        for tx, on in enumerate(list(row) + [False]):
            if on and start is None:
                start = tx
            elif not on and start is not None:
                runs.add((start, tx))
                start = None
        for run in list(open_runs):
            if run not in runs:
                y0 = open_runs.pop(run)
                boxes.append(Box(y0 * tile, min(h, ty * tile), run[0] * tile, min(w, run[1] * tile)))
        for run in runs:
            open_runs.setdefault(run, ty)
    return boxes


def _changed(frame: torch.Tensor, reference: torch.Tensor, threshold: float, tile: int, min_pixels: int):
    """Changed pixels (H, W), the share of pixels that changed, and the changed tiles (Th, Tw)."""
    changed = (frame - reference).abs().amax(0) > threshold  # (H, W)
    h, w = changed.shape
    th, tw = -(-h // tile), -(-w // tile)
    padded = torch.zeros(th * tile, tw * tile, dtype=torch.int32)
    padded[:h, :w] = changed
    counts = padded.view(th, tile, tw, tile).sum(dim=(1, 3))  # (Th, Tw)
    return changed, float(changed.float().mean()), counts >= min_pixels


def detect_changes(
    frame: torch.Tensor, reference: torch.Tensor, threshold: float, tile: int, min_pixels: int = 1
) -> tuple[list[Box], float]:
    """Boxes around the tiles of ``frame`` (3, H, W) with >= ``min_pixels`` pixels changed by > ``threshold``.

    A pixel changed when any channel moved by more than ``threshold`` (in the
    frame's units) against ``reference``. Returns the boxes and the share of
    pixels that changed.
    """
    changed, share, tiles = _changed(frame, reference, threshold, tile, min_pixels)
    return tile_boxes(tiles, tile, *changed.shape), share


def detect_pixels(
    frame: torch.Tensor, reference: torch.Tensor, threshold: float, tile: int = 1, min_pixels: int = 1
) -> tuple[torch.Tensor, float]:
    """The pixels (H, W) of ``frame`` changed by > ``threshold`` that lie in a tile with >= ``min_pixels`` of them.

    The tile test drops isolated specks (compression noise) in approximate
    mode; with ``tile=1`` every changed pixel counts. Returns the mask and the
    share of pixels that changed before the tile test.
    """
    changed, share, tiles = _changed(frame, reference, threshold, tile, min_pixels)
    if min_pixels > 1:
        h, w = changed.shape
        changed = changed & tiles.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:h, :w]
    return changed, share
