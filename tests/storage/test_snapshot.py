"""Snapshots: several datasets committed as one, resolved by downstream stages; on a local folder and S3."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys.errors import StorageError
from mlsys.storage import DatasetStore, S3Backend, Snapshot
from mlsys.storage.snapshot import snapshot_id

U, G, T = "u", "g", "t"


@pytest.fixture(params=["local", "s3"])
def store(request, mlsys_home) -> DatasetStore:
    if request.param == "local":
        return DatasetStore()
    return DatasetStore(request.getfixturevalue("s3_root"))


def _frame(seed: int, n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"id": np.arange(n) + 1000 * seed, "text": [f"row {seed}-{i}" for i in range(n)]})


def _ingest(store: DatasetStore, test: int, rest: int, **kwargs) -> Snapshot:
    return store.write_snapshot("comments", {U: _frame(rest), G: _frame(rest + 1), T: _frame(test)},
                                sources={"files": "a.csv"}, **kwargs)


def test_one_snapshot_names_every_split_and_moves_one_pointer(store):
    snap = _ingest(store, test=1, rest=10, created_by={"mlflow_run_id": "run-1"})
    assert snap.members == {name: ref.version for name, ref in snap.refs.items()}
    assert snap.id == snapshot_id("comments", snap.members) and snap.sequence == 1 and snap.move.moved
    for ref in snap.refs.values():
        assert ref.snapshot == snap.id and ref.move.moved
        assert store.ref(ref.name) == ref
    assert store.snapshot("comments@latest") == store.snapshot("comments") == store.snapshot(snap.id) == snap
    assert store.snapshot(f"comments@{snap.id}") == snap
    assert store.snapshots("comments") == [snap] and store.snapshot_names() == ["comments"]
    (move,) = store.snapshot_history("comments")
    assert move["version"] == snap.id and move["writer"] == "run-1" and move["from_version"] is None
    # a snapshot id resolves each member
    assert store.ref(T, snap.id) == snap.refs[T]
    with pytest.raises(StorageError, match="has no member 'other'"):
        store.ref("other", snap.id)


def test_rerun_keeps_the_snapshot_and_an_older_one_never_comes_back(store):
    first = _ingest(store, test=1, rest=10)
    second = _ingest(store, test=2, rest=20)
    assert second.sequence == 2 and store.snapshot("comments@latest") == second
    again = _ingest(store, test=1, rest=10)  # a clear of the first ingest's run, after the second
    assert again == first and again.sequence == 1 and not again.move.moved
    assert store.snapshot("comments@latest") == second
    for name in (U, G, T):
        assert store.ref(name).version == second.members[name]
    assert [m["version"] for m in store.snapshot_history("comments")] == [first.id, second.id]


def test_downstream_data_resolves_the_snapshot_it_descends_from(store):
    first = _ingest(store, test=1, rest=10)
    labeled = store.write("labeled", _frame(50), sources={U: first.members[U], G: first.members[G]})
    released = store.write("labeled", _frame(51), sources={"labeled": labeled.version, "model": "m/1"})
    second = _ingest(store, test=2, rest=20)  # a later ingest with another test split
    assert store.snapshot_of("labeled", labeled.version) == first
    assert store.snapshot_of("labeled", released.version) == first  # followed through two hops
    assert store.snapshot(released) == first
    # the test split of the data the model was trained on, not comments_test@latest
    assert store.ref(T, store.snapshot_of("labeled", labeled.version).id).version == first.members[T]
    assert store.ref(T).version == second.members[T]
    assert store.snapshot_of(T, second.members[T]) == second
    store.write("carried", _frame(60), snapshot=first.id)  # or a writer names it outright
    assert store.snapshot_of("carried") == first


def test_shared_versions_resolve_to_a_snapshot_that_holds_them_all(store):
    first = _ingest(store, test=1, rest=10)
    second = store.write_snapshot("comments", {U: _frame(10), G: _frame(31), T: _frame(1)})  # U and T shared
    assert second.refs[U].snapshot == first.id  # a version keeps the snapshot it was first committed in
    labeled = store.write("labeled", _frame(50), sources={U: second.members[U], G: second.members[G]})
    assert store.snapshot_of("labeled", labeled.version) == second
    store.write("mixed", _frame(51), sources={G: first.members[G], U: second.members[U]})
    assert store.snapshot_of("mixed") == first  # first holds both
    other = store.write("other", _frame(52), sources={G: first.members[G]})
    store.write("bad", _frame(53), sources={G: second.members[G], "other": other.version})
    with pytest.raises(StorageError, match="belong to different snapshots"):
        store.snapshot_of("bad")


def test_data_without_a_snapshot_says_so(store):
    store.write("plain", _frame(1), sources={"files": "x.csv"})
    with pytest.raises(StorageError, match="plain@.* descends from no snapshot"):
        store.snapshot_of("plain")
    with pytest.raises(StorageError, match="no snapshot 'nope'"):
        store.snapshot("nope")
    with pytest.raises(StorageError, match="'comments' has no snapshot"):
        store.snapshot("comments@latest")


def test_a_crash_before_the_snapshot_object_shows_nothing_and_the_retry_completes(store, monkeypatch):
    real = store.backend.put_if_absent

    def put_if_absent(key, data):
        if key.startswith("snapshots/") and key.count("/") == 1:
            raise RuntimeError("killed before the snapshot was committed")
        return real(key, data)

    monkeypatch.setattr(store.backend, "put_if_absent", put_if_absent)
    with pytest.raises(RuntimeError, match="killed"):
        _ingest(store, test=1, rest=10)
    monkeypatch.undo()
    assert store.snapshots() == []
    for name in (U, G, T):  # committed versions, but no pointer moved to them
        assert not store.backend.exists(f"datasets/{name}/_latest.json")
    snap = _ingest(store, test=1, rest=10)
    assert store.snapshot("comments@latest") == snap and all(r.move.moved for r in snap.refs.values())


def test_snapshot_with_the_lease_fallback(s3_root):
    store = DatasetStore(s3_root, backend=S3Backend(s3_root, conditional_writes="create-only"))
    first, second = _ingest(store, test=1, rest=10), _ingest(store, test=2, rest=20)
    assert not _ingest(store, test=1, rest=10).move.moved
    assert store.snapshot("comments@latest") == second and first.sequence < second.sequence
