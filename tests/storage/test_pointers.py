"""State only moves forward: sequence numbers, compare-and-set pointers, refused backward moves, the history of
every move, under racing writers; on a local folder and on S3 (moto) with native conditional writes and with
the lease fallback."""

from __future__ import annotations

import json
import multiprocessing
import threading

import numpy as np
import pandas as pd
import pytest

from mlsys.errors import StorageError
from mlsys.storage import DatasetStore, S3Backend

FAST_LEASE = {"write_bound_s": 0.1, "settle_s": 0.15, "ttl_s": 5}


def _frame(seed: int, n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"id": np.arange(n) + 1000 * seed, "x": np.full(n, float(seed))})


def _store(root: str, mode: str | None) -> DatasetStore:
    if mode is None:
        return DatasetStore(root)
    return DatasetStore(root, backend=S3Backend(root, conditional_writes=mode, lease_options=FAST_LEASE))


@pytest.fixture(params=["local", "s3-native", "s3-create-only", "s3-none"])
def target(request, mlsys_home) -> tuple[str, str | None]:
    """(root, S3 mode): every store made from it is another writer on the same data."""
    if request.param == "local":
        return str(mlsys_home / "storage"), None
    return request.getfixturevalue("s3_root"), request.param.removeprefix("s3-")


def _chain_is_complete(moves: list[dict]) -> None:
    """Each move starts where the one before ended and goes to a strictly higher sequence: none lost, none back."""
    previous = None
    for move in moves:
        assert move["from_version"] == (previous["version"] if previous else None)
        assert previous is None or move["sequence"] > previous["sequence"]
        previous = move


# -- one writer ----------------------------------------------------------------------


def test_every_version_gets_the_next_sequence(target):
    store = _store(*target)
    refs = [store.write("seq", _frame(i)) for i in range(3)]
    assert [r.sequence for r in refs] == [1, 2, 3]
    assert json.loads(store.get_bytes("datasets/seq/_seq.json")) == {"sequence": 3}
    assert store.versions("seq") == refs
    assert store.ref("seq", refs[1].version).sequence == 2  # stored in the version's metadata


def test_old_run_rewriting_old_content_leaves_latest(target):
    """A retry or clear of an old run writes old content again after a newer run: latest does not move back."""
    store = _store(*target)
    old = store.write("comments", _frame(1), created_by={"mlflow_run_id": "run-old"})
    new = store.write("comments", _frame(2), created_by={"mlflow_run_id": "run-new"})
    again = store.write("comments", _frame(1), created_by={"mlflow_run_id": "run-old-retry"})
    assert again == old and again.sequence == 1 and again.created_by == {"mlflow_run_id": "run-old"}
    assert not again.move.moved and again.move.current == new.version
    assert store.ref("comments") == new == store.versions("comments")[-1]
    moves = store.history("comments")
    assert [(m["version"], m["writer"]) for m in moves] == [(old.version, "run-old"), (new.version, "run-new")]
    _chain_is_complete(moves)


def test_validated_tag_of_an_older_version_after_a_newer_one_does_not_move(target):
    store = _store(*target)
    older, newer = store.write("labeled", _frame(1)), store.write("labeled", _frame(2))
    assert store.tag("labeled", newer.version, "validated").move.moved
    late = store.tag("labeled", older.version, "validated")  # a slow validation of the older version ends now
    assert late == older and not late.move.moved
    assert "refused to move backwards" in late.move.reason and late.move.current == newer.version
    assert store.ref("labeled", "validated") == newer
    again = store.tag("labeled", newer.version, "validated")  # an Airflow retry of the same validation
    assert not again.move.moved and again.move.reason == "already there"
    assert [m["version"] for m in store.history("labeled") if m["pointer"] == "validated"] == [newer.version]
    newest = store.write("labeled", _frame(3))
    assert store.tag("labeled", newest.version, "validated").move.moved


def test_history_names_the_writer_of_every_move(mlsys_home, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "mlsys_data")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__1")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "validate")
    monkeypatch.setenv("AIRFLOW_CTX_TRY_NUMBER", "2")
    store = DatasetStore()
    ref = store.write("named", _frame(1), created_by={"mlflow_run_id": "abc123"})
    store.tag("named", ref.version, "validated")
    latest, validated = store.history("named")
    assert latest["writer"] == "abc123" and latest["pointer"] == "latest" and latest["sequence"] == 1
    assert validated["writer"].startswith("cli (") and validated["pointer"] == "validated"
    assert validated["airflow"] == "mlsys_data/manual__1/validate try 2"
    assert latest["from_version"] is None and latest["at"]
    assert set(store.pointers("named")) == {"latest", "validated"}


def test_a_move_whose_history_record_was_lost_is_still_in_the_history(mlsys_home, monkeypatch):
    """A writer killed between moving the pointer and writing its record: the pointer holds the record."""
    from mlsys.storage.pointers import Series

    store = DatasetStore()
    first = store.write("crash", _frame(1))
    monkeypatch.setattr(Series, "_remember", lambda self, record: None)
    second = store.write("crash", _frame(2))
    assert not store.backend.exists(f"history/datasets/crash/{second.sequence:012d}-latest.json")
    assert [m["version"] for m in store.history("crash")] == [first.version, second.version]
    monkeypatch.undo()
    third = store.write("crash", _frame(3))  # the next move writes the missing record first
    assert store.backend.exists(f"history/datasets/crash/{second.sequence:012d}-latest.json")
    _chain_is_complete(moves := store.history("crash"))
    assert [m["version"] for m in moves] == [first.version, second.version, third.version]


def test_pointers_written_before_sequences_still_move_forward(mlsys_home):
    store = DatasetStore()
    legacy = store.write("legacy", _frame(1))
    meta = f"datasets/legacy/{legacy.version}/_metadata.json"
    old = {k: v for k, v in json.loads(store.get_bytes(meta)).items() if k not in ("sequence", "snapshot")}
    store.put_bytes(meta, json.dumps(old).encode())
    store.put_bytes("datasets/legacy/_latest.json", json.dumps({"version": legacy.version}).encode())
    store.backend.base.joinpath("datasets/legacy/_seq.json").unlink()
    assert store.ref("legacy").sequence == 0
    newer = store.write("legacy", _frame(2))
    assert newer.sequence == 1 and newer.move.moved and store.ref("legacy") == newer


# -- a writer that lost a race ---------------------------------------------------------


@pytest.mark.parametrize("key", ["_latest.json", "_seq.json"])
def test_a_writer_that_read_before_another_wrote_retries_and_never_goes_back(target, key):
    """Writer X reads the pointer (or the sequence counter); writer Y commits a newer version; X's
    compare-and-set against what it read fails, X reads again, and the pointer never moves back."""
    x, y = _store(*target), _store(*target)
    base = x.write("race", _frame(0))
    real = x.backend.get_versioned
    interleaved: list[str] = []

    def get_versioned(k):
        got = real(k)
        if k == f"datasets/race/{key}" and not interleaved:
            interleaved.append(y.write("race", _frame(99)).version)  # Y writes between X's read and X's write
        return got

    x.backend.get_versioned = get_versioned
    mine = x.write("race", _frame(1))
    assert interleaved
    theirs = y.ref("race", interleaved[0])
    assert len({base.sequence, mine.sequence, theirs.sequence}) == 3  # unique, even for the racing pair
    newest = max((mine, theirs), key=lambda r: r.sequence)
    assert y.ref("race") == newest == y.versions("race")[-1]
    if key == "_latest.json":
        assert theirs.sequence > mine.sequence and not mine.move.moved  # X committed first, then lost the move
    _chain_is_complete(y.history("race"))


# -- many writers at once ----------------------------------------------------------------


def _write_many(root: str, mode: str | None, worker: int, count: int, out) -> None:
    store = _store(root, mode)
    for i in range(count):
        ref = store.write("raced", _frame(100 * worker + i), created_by={"mlflow_run_id": f"w{worker}"})
        store.write("raced", _frame(100 * worker))  # the worker's first content again: an old run's retry
        store.tag("raced", ref.version, "validated")
        out.put((ref.version, ref.sequence))


def _race(root: str, mode: str | None, kind: str, workers: int, count: int) -> list[tuple[str, int]]:
    ctx = multiprocessing.get_context("fork") if kind == "processes" else None
    queue = ctx.Queue() if ctx else __import__("queue").Queue()
    store = _store(root, mode)
    seen: list[int] = []
    done = threading.Event()

    def watch():  # the latest pointer as readers see it while the writers run
        while not done.is_set():
            got = store.backend.get_versioned("datasets/raced/_latest.json")
            if got:
                seen.append(json.loads(got[0])["sequence"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    make = ctx.Process if ctx else threading.Thread
    runners = [make(target=_write_many, args=(root, mode, w, count, queue)) for w in range(workers)]
    for r in runners:
        r.start()
    for r in runners:
        r.join(timeout=300)
    done.set()
    watcher.join()
    if ctx:
        assert [r.exitcode for r in runners] == [0] * workers
    assert seen == sorted(seen), "a reader saw latest move backwards"
    return [queue.get(timeout=10) for _ in range(workers * count)]


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_racing_writers_on_a_local_folder(mlsys_home, kind):
    _check_race(str(mlsys_home / "storage"), None, kind, workers=4, count=5)


@pytest.mark.parametrize("mode", ["none"])
def test_racing_writers_on_s3_with_the_timed_lease(s3_root, mode):
    """moto checks a condition and writes in two steps, so only the lease fallback that needs no
    conditional writes is raced against it; the native path's races are the interleavings above."""
    _check_race(s3_root, mode, "threads", workers=3, count=2)


def _check_race(root: str, mode: str | None, kind: str, workers: int, count: int) -> None:
    written = _race(root, mode, kind, workers, count)
    store = _store(root, mode)
    versions = store.versions("raced")
    sequences = [r.sequence for r in versions]
    assert len(versions) == workers * count and len(set(sequences)) == len(sequences) == len(versions)
    assert sequences == sorted(sequences)
    assert {v: s for v, s in written} == {r.version: r.sequence for r in versions}  # one sequence for ever
    assert store.ref("raced") == versions[-1]  # latest agrees with versions()
    moves = store.history("raced")
    for pointer in ("latest", "validated"):
        _chain_is_complete([m for m in moves if m["pointer"] == pointer])
    assert store.ref("raced", "validated").sequence == max(s for _, s in written)
    assert not [k for k in store.backend.list("") if k.startswith("_leases/")]


def test_contention_error_is_clear(mlsys_home, monkeypatch):
    store = DatasetStore()
    store.write("busy", _frame(1))
    monkeypatch.setattr(store.backend, "put_if_match", lambda *a: False)  # every compare-and-set loses
    monkeypatch.setattr("mlsys.storage.pointers.RETRIES", 3)
    with pytest.raises(StorageError, match="datasets/busy: no sequence number after 3 tries"):
        store.write("busy", _frame(2))
