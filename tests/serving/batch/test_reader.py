"""The chunk reader re-cuts any row groups into fixed chunks of a row range; the prefetcher keeps order and errors."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsys.serving.batch.reader import Prefetcher, row_range


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    path = tmp_path_factory.mktemp("reader") / "data.parquet"
    table = pa.table({"id": [f"r{i}" for i in range(1000)], "text": [f"t {i}" for i in range(1000)]})
    pq.write_table(table, path, row_group_size=77)  # row groups that never line up with the chunks
    return path


@pytest.mark.parametrize("start,stop,chunk", [(0, 1000, 100), (0, 1000, 64), (130, 870, 50), (999, 1000, 10),
                                              (0, 1000, 5000), (500, 500, 10)])
def test_chunks_have_the_exact_rows_of_the_range(parquet, start, stop, chunk):
    tables = list(row_range(parquet, start, stop, chunk, columns=["id"]))
    sizes = [t.num_rows for t in tables]
    assert all(s == chunk for s in sizes[:-1]) and (not sizes or 0 < sizes[-1] <= chunk)
    ids = [v for t in tables for v in t.column("id").to_pylist()]
    assert ids == [f"r{i}" for i in range(start, stop)]


def test_prefetcher_reads_ahead_in_order_and_bounded():
    produced = []
    gate = threading.Event()

    def source():
        for i in range(10):
            produced.append(i)
            yield i

    pf = Prefetcher(source(), depth=2)
    gate.wait(0.3)
    assert len(produced) <= 4  # depth 2 in the queue, one blocked on put, at most one more
    assert list(pf) == list(range(10))


def test_prefetcher_raises_the_source_error_in_the_consumer():
    def source():
        yield 1
        raise OSError("disk gone")

    pf = Prefetcher(source())
    with pytest.raises(OSError, match="disk gone"):
        list(pf)


def test_close_stops_the_reader_thread():
    pf = Prefetcher(iter(range(10**9)), depth=1)
    next(iter(pf))
    pf.close()
    assert not pf._thread.is_alive()


def _peak_arrow_bytes_streaming(path, groups: int, rows: int = 20_000) -> int:
    import numpy as np

    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, pa.schema([("id", pa.large_string()), ("text", pa.large_string())])) as writer:
        for g in range(groups):  # random digits: ~0.5 MB per row group on disk, whatever the codec
            text = pa.array(rng.integers(0, 2**63, rows).astype("U20").tolist(), pa.large_string())
            writer.write_table(pa.table({"id": pa.array([f"r{g}-{i}" for i in range(rows)], pa.large_string()),
                                         "text": text}))
    before = pa.total_allocated_bytes()
    held = 0
    for table in row_range(path, 0, groups * rows, 4096, columns=["id", "text"]):
        held = max(held, pa.total_allocated_bytes() - before)
        del table
    return held


def test_memory_does_not_grow_with_the_file(tmp_path):
    """Arrow memory held while streaming is about one row group, however many row groups the file has.

    A single reader over the file kept every row group it had read (its pre-buffer cache): the whole file."""
    small = _peak_arrow_bytes_streaming(tmp_path / "small.parquet", groups=3)
    large = _peak_arrow_bytes_streaming(tmp_path / "large.parquet", groups=30)
    assert large < 1.5 * small, (
        f"streaming 30 row groups held {large / 2**20:.1f} MB of Arrow memory, 3 row groups {small / 2**20:.1f} MB; "
        "memory should stay at about one row group")
