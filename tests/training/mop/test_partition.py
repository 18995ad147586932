"""The data cut once into partitions, in storage (local folder or S3): each rank reads its own and no other."""

from __future__ import annotations

import pytest
import torch

from mlsys.training.mop import partition


def _data(n: int = 11):
    return [torch.arange(n), torch.arange(n * 2.0).reshape(n, 2)], [torch.arange(n) % 2]


def test_split_shuffles_once_and_covers_every_row_once():
    inputs, targets = _data()
    parts = partition.split(inputs, targets, 3, seed=4)
    assert [len(p["inputs"][0]) for p in parts] == [4, 4, 3]
    seen = torch.cat([p["inputs"][0] for p in parts])
    assert sorted(seen.tolist()) == list(range(11)) and seen.tolist() != list(range(11))
    for p in parts:  # rows stay whole: every tensor of a row moves together
        assert torch.equal(p["inputs"][1][:, 0], p["inputs"][0] * 2.0)
        assert torch.equal(p["targets"][0], p["inputs"][0] % 2)
    assert partition.split(inputs, targets, 3, seed=4)[0]["inputs"][0].tolist() == parts[0]["inputs"][0].tolist()


@pytest.mark.parametrize("parts, message", [(0, r"partitions=0 is invalid for 11 rows"), (12, r"partitions=12")])
def test_bad_partition_counts(parts, message):
    with pytest.raises(ValueError, match=message):
        partition.split(*_data(), parts)


def _round_trip(uri: str) -> None:
    parts = partition.split(*_data(), 2)
    assert partition.index(uri) is None
    index = partition.write(parts, uri)
    assert index == partition.index(uri) and index["rows"] == [6, 5] and index["bytes"][0] == partition.nbytes(parts[0])
    got = partition.read(uri, 1)
    want = parts[1]["inputs"] + parts[1]["targets"]
    assert all(torch.equal(a, b) for a, b in zip(got["inputs"] + got["targets"], want))
    with pytest.raises(ValueError, match=r"partition 2 does not exist .* it holds 2"):
        partition.read(uri, 2)


def test_local_round_trip(tmp_path):
    _round_trip(str(tmp_path / "parts"))
    with pytest.raises(FileNotFoundError, match="no partitions under"):
        partition.read(str(tmp_path / "none"), 0)


def test_s3_round_trip(s3_root):
    _round_trip(f"{s3_root}/mop/parts")
