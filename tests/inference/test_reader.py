"""The chunk reader re-cuts any row groups into fixed chunks of a row range; the prefetcher keeps order and errors."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsys.inference.reader import Prefetcher, row_range


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
