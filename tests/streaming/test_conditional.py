"""Create-only writes and compare-and-set: a local folder (flock, os.link) and S3 (conditional puts, or a lease)."""

import json
import threading
import time

import pytest

from mlsys.storage import DatasetStore
from mlsys.streaming import conditional, watermark
from mlsys.streaming.conditional import AlreadyExists, ConflictError, compare_and_set, create_only


def _race(n, target):
    barrier, results = threading.Barrier(n), [None] * n

    def worker(i):
        barrier.wait(10)
        try:
            target(i)
            results[i] = "won"
        except ConflictError:
            results[i] = "lost"

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _semantics(backend):
    create_only(backend, "a/seg-1", b"first")
    with pytest.raises(AlreadyExists):
        create_only(backend, "a/seg-1", b"second")
    assert backend.get_bytes("a/seg-1") == b"first"
    compare_and_set(backend, "a/mark", None, b"1")  # None: create
    with pytest.raises(ConflictError):
        compare_and_set(backend, "a/mark", None, b"1")  # it exists now
    compare_and_set(backend, "a/mark", b"1", b"2")
    with pytest.raises(ConflictError) as stale:
        compare_and_set(backend, "a/mark", b"1", b"3")  # a writer that read 1
    assert backend.get_bytes("a/mark") == b"2"
    assert stale.value.current in (b"2", None)  # what is there now, where the endpoint says it
    conditional.delete(backend, "a/seg-1")
    conditional.delete(backend, "a/seg-1")  # absent: nothing
    assert not backend.exists("a/seg-1")


def test_local_create_only_and_compare_and_set(mlsys_home):
    backend = DatasetStore().backend
    _semantics(backend)
    assert [k for k in backend.list("a/") if ".tmp-" in k] == []  # no temporary file left behind


def test_local_races_have_exactly_one_winner(mlsys_home):
    backend = DatasetStore().backend
    assert sorted(_race(8, lambda i: create_only(backend, "r/seg", f"{i}".encode()))) == ["lost"] * 7 + ["won"]
    compare_and_set(backend, "r/mark", None, b"0")
    for round_ in range(3):
        expected = backend.get_bytes("r/mark")
        results = _race(6, lambda i, e=expected, r=round_: compare_and_set(backend, "r/mark", e, f"{r}.{i}".encode()))
        assert sorted(results) == ["lost"] * 5 + ["won"]
        assert backend.get_bytes("r/mark") == f"{round_}.{results.index('won')}".encode()


def test_s3_conditional_puts(mlsys_home, s3_root, monkeypatch):
    monkeypatch.setattr(conditional, "_CONDITIONAL", {})
    backend = DatasetStore(s3_root).backend
    _semantics(backend)
    assert list(conditional._CONDITIONAL.values()) == [{"IfMatch", "IfNoneMatch"}]  # moto honours both
    assert backend.list("_leases/") == []  # the probe cleaned up; no lease was needed


def _ignore_conditions(backend):
    """An endpoint that silently ignores If-Match / If-None-Match (the case the lease fallback exists for)."""

    def strip(params, **kwargs):
        params.pop("IfMatch", None)
        params.pop("IfNoneMatch", None)

    backend.client.meta.events.register("before-parameter-build.s3.PutObject", strip)


def test_s3_without_conditional_puts_falls_back_to_a_lease(mlsys_home, s3_root, monkeypatch):
    monkeypatch.setattr(conditional, "_CONDITIONAL", {})
    monkeypatch.setattr(conditional, "LEASE_SETTLE_S", 0.05)
    monkeypatch.setattr(conditional, "LEASE_WAIT_S", 0.5)
    backend = DatasetStore(s3_root).backend
    _ignore_conditions(backend)
    _semantics(backend)
    assert list(conditional._CONDITIONAL.values()) == [set()]  # the probe saw the headers ignored
    assert backend.list("_leases/") == []  # every lease released
    # a live lease of another writer blocks; an expired one (a crashed holder) is taken over
    lease = "_leases/a/mark"
    backend.put_bytes(lease, json.dumps({"owner": "other", "expires_at": time.time() + 60}).encode())
    with pytest.raises(ConflictError, match="held by another writer"):
        compare_and_set(backend, "a/mark", b"2", b"3")
    backend.put_bytes(lease, json.dumps({"owner": "other", "expires_at": time.time() - 1}).encode())
    compare_and_set(backend, "a/mark", b"2", b"3")
    assert backend.get_bytes("a/mark") == b"3" and not backend.exists(lease)


def test_s3_stream_put_and_watermark_are_conditional(mlsys_home, s3_root, segment_files, monkeypatch):
    from mlsys.streaming.predictions import read_predictions
    from mlsys.streaming.stage import StreamSpec, run

    monkeypatch.setattr(conditional, "_CONDITIONAL", {})
    store = DatasetStore(s3_root)
    seg = segment_files["segments"]
    watermark.put_segment(store, "camera", 1, seg[0])
    with pytest.raises(watermark.SegmentExists, match="already has segment 1"):
        watermark.put_segment(store, "camera", 1, seg[1])
    watermark.put_segment(store, "camera", 2, seg[1])
    result = run(StreamSpec(model="small", width=0.25, size=64, error_every=0, storage_uri=s3_root))
    assert result.segments == [1, 2]
    mark = watermark.read(store, "camera")
    assert read_predictions(store, "camera")["frame"].tolist() == list(range(16))
    assert store.backend.list("streams/camera/state/") == [mark.state]  # pruned on S3 too
    with pytest.raises(watermark.WatermarkConflict):
        watermark.commit(store, "camera", watermark.Watermark(1, 8), watermark.Watermark())
