import torch

from mlsys.streaming.incremental.region import (
    Box,
    detect_changes,
    merge_boxes,
    tile_boxes,
    union_area,
)


def test_box_geometry():
    a, b = Box(0, 4, 0, 4), Box(2, 6, 3, 8)
    assert a.area == 16 and a.intersect(b) == Box(2, 4, 3, 4)
    assert a.hull(b) == Box(0, 6, 0, 8)
    assert Box(0, 2, 0, 2).intersect(Box(2, 4, 0, 2)) is None
    assert Box(-3, 5, 10, 20).clip(4, 12) == Box(0, 4, 10, 12)
    assert union_area([a, b]) == 16 + 20 - 2


def test_scattered_changes_give_several_boxes_not_one():
    ref = torch.zeros(3, 64, 64)
    frame = ref.clone()
    frame[:, 2:6, 2:6] = 1.0  # top left
    frame[:, 50:60, 40:62] = 1.0  # bottom right
    frame[:, 30, 30] += 10 / 255  # under the threshold: compression noise
    boxes, share = detect_changes(frame, ref, threshold=16 / 255, tile=8)
    assert len(boxes) >= 2
    covered = sum(b.area for b in boxes)
    assert covered < 0.25 * 64 * 64  # one bounding box would cover half the frame
    changed = (frame - ref).abs().amax(0) > 16 / 255
    mask = torch.zeros(64, 64, dtype=torch.bool)
    for b in boxes:
        mask[b.y0:b.y1, b.x0:b.x1] = True
    assert bool(mask[changed].all())  # every changed pixel is inside a box
    assert not bool(mask[30, 30])
    assert abs(share - float(changed.float().mean())) < 1e-9


def test_min_pixels_ignores_isolated_pixels():
    ref = torch.zeros(3, 32, 32)
    frame = ref.clone()
    frame[:, 3, 3] = 1.0
    assert detect_changes(frame, ref, 0.1, 8, min_pixels=1)[0]
    assert detect_changes(frame, ref, 0.1, 8, min_pixels=2)[0] == []


def test_tile_boxes_stack_equal_runs():
    tiles = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    boxes = tile_boxes(tiles, 4, 16, 15)  # the map is 16 x 15: the last tile column is cut
    assert sorted(boxes, key=lambda b: (b.y0, b.x0)) == [Box(0, 8, 4, 12), Box(8, 12, 4, 15), Box(12, 16, 12, 15)]


def test_merge_boxes_merges_overlaps_but_not_distant_boxes():
    near = merge_boxes([Box(0, 10, 0, 10), Box(0, 10, 8, 18)])
    assert near == [Box(0, 10, 0, 18)]
    far = merge_boxes([Box(0, 4, 0, 4), Box(60, 64, 60, 64)])
    assert len(far) == 2
    chain = merge_boxes([Box(i * 10, i * 10 + 4, i * 10, i * 10 + 4) for i in range(6)])
    assert sum(b.area for b in chain) < 6 * 16 * 2  # a diagonal never collapses into one big hull
    capped = merge_boxes([Box(0, 1, 4 * i, 4 * i + 1) for i in range(10)], max_boxes=3)
    assert len(capped) == 3


def test_merge_boxes_pays_a_call_to_merge_distant_boxes_only_when_it_is_cheaper():
    a, b = Box(0, 1, 0, 1), Box(0, 1, 4, 5)  # hull 1 x 5 = 5 positions, the two boxes 2
    assert len(merge_boxes([a, b], free_area=0.0)) == 2
    assert merge_boxes([a, b], free_area=3.0) == [Box(0, 1, 0, 5)]
    assert len(merge_boxes([a, b], free_area=2.9)) == 2
    # a row of 1x1 boxes 4 apart: each merge must pay for itself, so the computed area stays bounded
    row = [Box(0, 1, 4 * i, 4 * i + 1) for i in range(10)]
    merged = merge_boxes(row, free_area=3.0)
    assert sum(m.area for m in merged) <= sum(r.area for r in row) + 3.0 * (len(row) - len(merged))
