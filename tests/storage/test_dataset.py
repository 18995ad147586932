"""Immutable, content-addressed Parquet datasets, on a local folder and on S3 (a real moto server)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlsys.errors import StorageError
from mlsys.storage import DatasetRef, DatasetStore, LocalBackend, S3Backend
from mlsys.storage.dataset import DATA_FILE, META_FILE


@pytest.fixture(params=["local", "s3"])
def store(request, mlsys_home) -> DatasetStore:
    if request.param == "local":
        return DatasetStore()  # the default root: $MLSYS_HOME/storage
    return DatasetStore(request.getfixturevalue("s3_root"))


def _frame(n: int = 5, offset: int = 0) -> pd.DataFrame:
    """A frame with int, float, string, bool, list<float> columns, with nulls where they can be."""
    ids = np.arange(offset, offset + n, dtype="int64")
    return pd.DataFrame(
        {
            "id": ids,
            "score": [float(i) / 3 if i % 3 else None for i in ids],
            "text": [f"comment {i} \u00e9\u00e8 \u2713" if i % 4 else None for i in ids],
            "flag": [bool(i % 2) for i in ids],
            "vec": [[float(i), float(i) / 2, -1.5] if i % 5 else None for i in ids],
        }
    )


def _batches(n_batches: int, rows: int, start: int = 0):
    schema = pa.schema([("id", pa.int64()), ("x", pa.float32()), ("vec", pa.list_(pa.float32()))])
    for b in range(n_batches):
        ids = list(range(start + b * rows, start + (b + 1) * rows))
        yield pa.record_batch(
            [pa.array(ids, pa.int64()), pa.array([i * 0.5 for i in ids], pa.float32()),
             pa.array([[float(i)] * 3 for i in ids], pa.list_(pa.float32()))],
            schema=schema,
        )


def _tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def _data_key(ref: DatasetRef) -> str:
    return f"datasets/{ref.name}/{ref.version}/{DATA_FILE}"


# -- round trip and metadata -----------------------------------------------------


def test_default_root_is_under_mlsys_home(mlsys_home):
    store = DatasetStore()
    assert store.root_uri == str(mlsys_home / "storage")
    assert isinstance(store.backend, LocalBackend)


def test_round_trip_dataframe(store):
    df = _frame(12)
    ref = store.write(
        "comments",
        df,
        sources={"files": "a.csv,b.csv"},
        created_by={"stage": "ingest", "run_id": "r1"},
        extra={"note": "test"},
    )
    assert ref.name == "comments"
    assert ref.rows == 12
    assert [c["name"] for c in ref.columns] == ["id", "score", "text", "flag", "vec"]
    types = {c["name"]: c["type"] for c in ref.columns}
    assert types.pop("text") in ("string", "large_string")  # pandas 3 strings become large_string
    assert types == {"id": "int64", "score": "double", "flag": "bool", "vec": "list<item: double>"}
    assert ref.sources == {"files": "a.csv,b.csv"}
    assert ref.created_by == {"stage": "ingest", "run_id": "r1"}
    assert ref.extra == {"note": "test"}
    assert ref.label == f"comments@{ref.version}"
    assert datetime.fromisoformat(ref.created_at).tzinfo is not None

    # the version is the content hash of the stored Parquet file
    data = store.get_bytes(_data_key(ref))
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.version == ref.sha256[:16]
    assert ref.size_bytes == len(data)
    if isinstance(store.backend, S3Backend):
        assert ref.uri == f"{store.root_uri}/datasets/comments/{ref.version}"
    else:
        assert Path(ref.uri) == Path(store.root_uri).resolve() / "datasets" / "comments" / ref.version

    # the table comes back exactly, nulls included
    table = store.read_table("comments")
    assert table.equals(pa.Table.from_pandas(df, preserve_index=False))
    back = store.read("comments", ref.version)
    assert list(back.columns) == list(df.columns)
    assert back["id"].tolist() == df["id"].tolist()
    assert back["id"].dtype == np.int64
    assert back["flag"].tolist() == df["flag"].tolist()
    assert back["score"].isna().tolist() == df["score"].isna().tolist()
    np.testing.assert_allclose(back["score"].dropna(), df["score"].dropna())
    assert back["text"].isna().tolist() == df["text"].isna().tolist()
    assert back["text"].dropna().tolist() == df["text"].dropna().tolist()
    for got, want in zip(back["vec"], df["vec"]):
        if want is None:
            assert got is None
        else:
            assert list(got) == want

    # a column subset
    assert store.read("comments", columns=["id", "text"]).columns.tolist() == ["id", "text"]


def test_metadata_file_is_the_ref(store):
    ref = store.write("meta", _frame(3), sources={"s": "1"})
    raw = json.loads(store.get_bytes(f"datasets/meta/{ref.version}/{META_FILE}"))
    assert DatasetRef.from_json(raw) == ref
    assert DatasetRef.from_json(json.loads(json.dumps(ref.to_json()))) == ref
    assert store.ref("meta") == ref
    assert store.ref("meta", ref.version) == ref
    assert store.versions("meta") == [ref]


def test_round_trip_arrow_table(store):
    table = pa.table({"a": pa.array([1, None, 3], pa.int32()), "b": pa.array(["x", "y", None])})
    ref = store.write("arrow", table)
    assert ref.rows == 3
    assert store.read_table("arrow").equals(table)


def test_path_is_a_local_parquet_file(store, mlsys_home):
    ref = store.write("paths", _frame(4))
    path = store.path(ref)
    assert path.is_file()
    assert pq.read_metadata(path).num_rows == 4
    if isinstance(store.backend, S3Backend):
        assert mlsys_home / "cache" in path.parents  # downloaded once into the cache
        assert store.path(ref) == path


# -- content addressing ----------------------------------------------------------


def test_same_content_gives_the_same_version(store):
    first = store.write("same", _frame(6), created_by={"try": 1})
    second = store.write("same", _frame(6), created_by={"try": 2})
    assert second == first  # the stored ref, not a new one
    assert second.created_by == {"try": 1}
    assert len(store.versions("same")) == 1
    assert second.sequence == first.sequence == 1
    assert first.move.moved and not second.move.moved and second.move.reason == "already there"
    keys = store.backend.list("datasets/same/")
    assert keys == sorted(
        [f"datasets/same/{first.version}/{DATA_FILE}", f"datasets/same/{first.version}/{META_FILE}",
         "datasets/same/_latest.json", "datasets/same/_seq.json"]
    )


def test_rewriting_old_content_never_moves_latest_back(store):
    """An Airflow retry or clear of an old run re-writes old content: ``latest`` stays on the newer version."""
    a = store.write("flip", _frame(3))
    b = store.write("flip", _frame(4))
    assert store.ref("flip") == b
    again = store.write("flip", _frame(3))
    assert again == a and again.sequence == a.sequence == 1 and b.sequence == 2
    assert not again.move.moved and "backwards" in again.move.reason and again.move.current == b.version
    assert store.ref("flip") == b
    assert [r.version for r in store.versions("flip")] == [a.version, b.version]
    assert store.versions("flip")[-1] == store.ref("flip")


def test_different_content_gives_a_new_version_and_latest_is_the_newest(store):
    first = store.write("evolving", _frame(6))
    second = store.write("evolving", _frame(7))
    third = store.write("evolving", _frame(6, offset=100))
    assert len({first.version, second.version, third.version}) == 3
    assert [r.version for r in store.versions("evolving")] == [first.version, second.version, third.version]
    assert store.ref("evolving") == third
    assert store.ref("evolving", "latest") == third
    assert store.ref("evolving", first.version) == first
    assert store.read("evolving", first.version)["id"].tolist() == list(range(6))
    assert store.read("evolving")["id"].tolist() == list(range(100, 106))


def test_datasets_are_separate(store):
    a = store.write("alpha", _frame(3))
    b = store.write("alpha_beta", _frame(4))
    assert store.versions("alpha") == [a]
    assert store.versions("alpha_beta") == [b]
    assert store.versions("never_written") == []


# -- immutability ----------------------------------------------------------------


def test_new_content_never_changes_an_existing_version(store):
    first = store.write("immutable", _frame(8))
    data_before = store.get_bytes(_data_key(first))
    meta_before = store.get_bytes(f"datasets/immutable/{first.version}/{META_FILE}")
    for n in range(1, 4):
        store.write("immutable", _frame(8, offset=n * 10))
    store.write("immutable", _frame(8))  # the same content again
    assert store.get_bytes(_data_key(first)) == data_before
    assert store.get_bytes(f"datasets/immutable/{first.version}/{META_FILE}") == meta_before
    assert store.ref("immutable", first.version) == first
    assert store.read("immutable", first.version)["id"].tolist() == list(range(8))


# -- atomicity -------------------------------------------------------------------


class SimulatedCrash(RuntimeError):
    pass


def _crash_on_metadata(monkeypatch, store: DatasetStore) -> list[str]:
    """Make the backend die when it is about to write a commit marker; returns the keys it wrote."""
    original = store.backend.put_if_absent
    written: list[str] = []

    def put_if_absent(key: str, data: bytes) -> bool:
        if key.endswith(META_FILE):
            raise SimulatedCrash(f"crash before writing {key}")
        written.append(key)
        return original(key, data)

    monkeypatch.setattr(store.backend, "put_if_absent", put_if_absent)
    return written


def test_crash_before_commit_leaves_an_invisible_version_and_a_retry_commits_it(store, monkeypatch):
    df = _frame(9)
    _crash_on_metadata(monkeypatch, store)
    with pytest.raises(SimulatedCrash):
        store.write("crashy", df)

    # the data file is there, but without its commit marker no reader sees it
    orphans = [k for k in store.backend.list("datasets/crashy/") if k.count("/") == 3]
    assert len(orphans) == 1 and orphans[0].endswith(f"/{DATA_FILE}")
    assert not store.backend.exists("datasets/crashy/_latest.json")
    assert store.versions("crashy") == []
    with pytest.raises(StorageError, match="'crashy' has no committed version") as err:
        store.ref("crashy")
    assert "run the stage that produces it first" in str(err.value)
    orphan_version = orphans[0].split("/")[2]
    with pytest.raises(StorageError, match=f"no version '{orphan_version}'"):
        store.ref("crashy", orphan_version)
    with pytest.raises(StorageError):
        store.read("crashy")

    # the retry writes the same bytes to the same key and commits
    monkeypatch.undo()
    ref = store.write("crashy", df)
    assert ref.version == orphan_version
    assert store.versions("crashy") == [ref]
    assert store.ref("crashy") == ref
    assert store.read("crashy")["id"].tolist() == df["id"].tolist()
    if isinstance(store.backend, LocalBackend):
        assert _tmp_files(store.backend.base) == []


def test_crash_does_not_disturb_the_committed_versions(store, monkeypatch):
    good = store.write("stable", _frame(5))
    _crash_on_metadata(monkeypatch, store)
    with pytest.raises(SimulatedCrash):
        store.write("stable", _frame(5, offset=50))
    monkeypatch.undo()
    assert store.versions("stable") == [good]
    assert store.ref("stable") == good


def test_local_crash_inside_the_commit_write_leaves_nothing_behind(mlsys_home, monkeypatch):
    """A failure while the commit marker itself is written (not before): no marker, no temporary file."""
    import os

    store = DatasetStore()
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(META_FILE):
            raise OSError("simulated crash while committing")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="simulated"):
        store.write("partial", _frame(4))
    monkeypatch.undo()
    assert store.versions("partial") == []
    assert _tmp_files(store.backend.base) == []
    ref = store.write("partial", _frame(4))
    assert store.versions("partial") == [ref]
    assert _tmp_files(store.backend.base) == []


def test_failed_write_of_a_batch_stream_leaves_nothing(store):
    def broken():
        yield from _batches(2, 10)
        raise ValueError("source went away")

    with pytest.raises(ValueError, match="source went away"):
        store.write("broken", broken())
    assert store.versions("broken") == []
    assert store.backend.list("datasets/broken/") == []


# -- streaming -------------------------------------------------------------------


def test_streaming_write_and_iter_batches(store):
    ref = store.write("stream", _batches(5, 1000), created_by={"stage": "featurize"})
    assert ref.rows == 5000
    assert [c["name"] for c in ref.columns] == ["id", "x", "vec"]
    assert {c["name"]: c["type"] for c in ref.columns}["vec"] == "list<item: float>"

    batches = list(store.iter_batches(ref, batch_size=700))
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert max(b.num_rows for b in batches) <= 700
    assert sum(b.num_rows for b in batches) == 5000
    table = pa.Table.from_batches(batches)
    assert table.column("id").to_pylist() == list(range(5000))
    assert table.column("vec").to_pylist()[1234] == [1234.0] * 3
    assert table.equals(pa.Table.from_batches(list(_batches(5, 1000))))

    only_ids = list(store.iter_batches(ref, batch_size=2000, columns=["id"]))
    assert all(b.schema.names == ["id"] for b in only_ids)

    # the same stream again is the same version
    assert store.write("stream", _batches(5, 1000)) == ref
    assert len(store.versions("stream")) == 1


def test_streaming_write_is_lazy(store):
    """Batches are pulled one at a time, not collected first."""
    pulled: list[int] = []

    def source():
        for i, batch in enumerate(_batches(3, 10)):
            pulled.append(i)
            yield batch

    ref = store.write("lazy", source())
    assert pulled == [0, 1, 2]
    assert ref.rows == 30


def test_record_batch_reader_is_accepted(store):
    batches = list(_batches(2, 5))
    reader = pa.RecordBatchReader.from_batches(batches[0].schema, batches)
    ref = store.write("reader", reader)
    assert ref.rows == 10
    assert store.read_table("reader").column("id").to_pylist() == list(range(10))


def test_empty_stream_needs_a_schema(store):
    with pytest.raises(StorageError, match="'empty': no batches and no schema given"):
        store.write("empty", iter([]))
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    ref = store.write("empty", iter([]), schema=schema)
    assert ref.rows == 0
    assert ref.columns == [{"name": "id", "type": "int64"}, {"name": "text", "type": "string"}]
    assert store.read_table("empty").schema.equals(schema)
    assert list(store.iter_batches(ref)) == []


# -- errors ----------------------------------------------------------------------


def test_unknown_dataset(store):
    with pytest.raises(StorageError, match="dataset 'ghost' has no committed version") as err:
        store.ref("ghost")
    assert store.root_uri in str(err.value)
    with pytest.raises(StorageError, match="dataset 'ghost' has no version 'abcdef0123456789'.*known versions: none"):
        store.ref("ghost", "abcdef0123456789")
    with pytest.raises(StorageError, match="'ghost'"):
        store.read("ghost")


def test_unknown_version_lists_the_known_ones(store):
    a = store.write("known", _frame(2))
    b = store.write("known", _frame(3))
    with pytest.raises(StorageError) as err:
        store.ref("known", "0000000000000000")
    message = str(err.value)
    assert "'known'" in message and "'0000000000000000'" in message
    assert a.version in message and b.version in message
    with pytest.raises(StorageError, match="known versions"):
        store.read_table("known", "0000000000000000")


@pytest.mark.parametrize(
    "name", ["", "a/b", ".hidden", "..", "../escape", " padded", "padded ", "with space", "tab\tname", "-dash", "a\\b"]
)
def test_bad_names_are_rejected(store, name):
    with pytest.raises(StorageError, match="is not valid"):
        store.write(name, _frame(2))
    with pytest.raises(StorageError, match="is not valid"):
        store.versions(name)
    with pytest.raises(StorageError, match="is not valid"):
        store.ref(name)
    with pytest.raises(StorageError, match="is not valid"):
        store.ref(name, "0123456789abcdef")


@pytest.mark.parametrize("name", ["comments_unlabeled", "comments-gold", "v1.2", "A9", "9lives"])
def test_good_names_are_accepted(store, name):
    ref = store.write(name, _frame(2))
    assert store.ref(name) == ref


@pytest.mark.parametrize("version", ["../other", "a/b", ".hidden", "../../datasets/x/0123456789abcdef"])
def test_bad_versions_are_rejected(store, version):
    store.write("victim", _frame(2))
    with pytest.raises(StorageError, match="version .* is not valid"):
        store.ref("victim", version)


def test_version_cannot_reach_another_dataset(store):
    other = store.write("other", _frame(2))
    store.write("mine", _frame(3))
    with pytest.raises(StorageError):
        store.ref("mine", f"../other/{other.version}")


def test_local_key_escaping_the_root_is_rejected(mlsys_home):
    store = DatasetStore()
    with pytest.raises(StorageError, match="escapes the storage root"):
        store.put_bytes("../../outside.txt", b"x")
    with pytest.raises(StorageError, match="escapes the storage root"):
        store.get_bytes("/etc/hostname")
    assert not (mlsys_home.parent / "outside.txt").exists()


@pytest.mark.parametrize("uri", ["gs://x", "az://container/prefix", "hdfs://namenode/path"])
def test_unsupported_uri_scheme_is_rejected(mlsys_home, uri):
    with pytest.raises(StorageError, match="unsupported storage URI") as err:
        DatasetStore(uri)
    assert repr(uri) in str(err.value)


def test_storage_uri_from_the_environment(mlsys_home, s3_root, monkeypatch):
    monkeypatch.setenv("MLSYS_STORAGE_URI", s3_root)
    store = DatasetStore()
    assert store.root_uri == s3_root
    assert isinstance(store.backend, S3Backend)


# -- plain files -----------------------------------------------------------------


def test_put_get_bytes_and_list(store):
    uri = store.put_bytes("reports/run1/summary.json", b'{"ok": true}')
    store.put_bytes("reports/run1/plot.png", b"\x89PNG\r\n")
    store.put_bytes("reports/run2/summary.json", b"{}")
    assert store.get_bytes("reports/run1/summary.json") == b'{"ok": true}'
    if isinstance(store.backend, S3Backend):
        assert uri == f"{store.root_uri}/reports/run1/summary.json"
    else:
        assert Path(uri).read_bytes() == b'{"ok": true}'
    assert store.backend.list("reports/") == [
        "reports/run1/plot.png",
        "reports/run1/summary.json",
        "reports/run2/summary.json",
    ]
    assert store.backend.list("reports/run1/") == ["reports/run1/plot.png", "reports/run1/summary.json"]
    with pytest.raises(StorageError, match="no object 'reports/run3/summary.json'"):
        store.get_bytes("reports/run3/summary.json")


def test_plain_files_do_not_show_up_as_versions(store):
    store.put_bytes("datasets/loose/readme.txt", b"not a dataset")
    store.put_bytes("datasets/loose/abc/notes.txt", b"nor this")
    assert store.versions("loose") == []


def _peak_arrow_bytes_iterating(store: DatasetStore, groups: int, rows: int = 20_000) -> int:
    rng = np.random.default_rng(0)

    def batches():  # one row group each; random digits: ~0.5 MB per row group on disk
        for g in range(groups):
            text = pa.array(rng.integers(0, 2**63, rows).astype("U20").tolist(), pa.large_string())
            yield pa.record_batch([pa.array(np.arange(g * rows, (g + 1) * rows)), text], names=["id", "text"])

    ref = store.write(f"groups{groups}", batches())
    assert pq.ParquetFile(store.path(ref)).num_row_groups == groups
    before = pa.total_allocated_bytes()
    held = 0
    for batch in store.iter_batches(ref, batch_size=4096):
        held = max(held, pa.total_allocated_bytes() - before)
        del batch
    return held


def test_iter_batches_memory_does_not_grow_with_the_file(mlsys_home):
    """A single reader over the file kept every row group it had read (its pre-buffer cache): the whole file."""
    store = DatasetStore()
    small, large = _peak_arrow_bytes_iterating(store, 3), _peak_arrow_bytes_iterating(store, 30)
    assert large < 1.5 * small, (
        f"iterating 30 row groups held {large / 2**20:.1f} MB of Arrow memory, 3 row groups {small / 2**20:.1f} MB")
