"""The byte stores under a root URI: a local folder and S3 (a real moto server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlsys.errors import StorageError
from mlsys.storage.backend import LocalBackend, S3Backend, backend_for


@pytest.fixture(params=["local", "s3"])
def backend(request, mlsys_home):
    if request.param == "local":
        return backend_for(str(mlsys_home / "storage"))
    return backend_for(request.getfixturevalue("s3_root"))


def _tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


# -- both backends -------------------------------------------------------------


def test_backend_for_picks_the_backend(backend):
    assert isinstance(backend, (LocalBackend, S3Backend))
    if isinstance(backend, S3Backend):
        assert backend.root.startswith("s3://") and backend.prefix == "mlsys"


def test_put_get_bytes_round_trip(backend):
    payload = bytes(range(256)) * 10
    backend.put_bytes("files/blob.bin", payload)
    assert backend.get_bytes("files/blob.bin") == payload
    assert backend.exists("files/blob.bin")
    assert not backend.exists("files/other.bin")


def test_put_bytes_overwrites_plain_files(backend):
    backend.put_bytes("files/a.txt", b"one")
    backend.put_bytes("files/a.txt", b"two")
    assert backend.get_bytes("files/a.txt") == b"two"
    assert backend.list("files/") == ["files/a.txt"]


def test_empty_object(backend):
    backend.put_bytes("empty", b"")
    assert backend.get_bytes("empty") == b""
    assert backend.exists("empty")


def test_put_file_round_trip(backend, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * (3 << 20) + b"end")
    backend.put_file("files/big.bin", src)
    assert backend.get_bytes("files/big.bin") == src.read_bytes()


def test_list_is_sorted_and_relative_to_the_root(backend):
    for key in ("b/2.txt", "a/1.txt", "b/1.txt", "b/sub/3.txt", "c.txt"):
        backend.put_bytes(key, key.encode())
    assert backend.list("") == ["a/1.txt", "b/1.txt", "b/2.txt", "b/sub/3.txt", "c.txt"]
    assert backend.list("b/") == ["b/1.txt", "b/2.txt", "b/sub/3.txt"]
    assert backend.list("missing/") == []
    for key in backend.list(""):
        assert backend.get_bytes(key) == key.encode()


def test_missing_object_is_a_storage_error(backend):
    with pytest.raises(StorageError, match="no object 'nope/missing.bin'"):
        backend.get_bytes("nope/missing.bin")
    with pytest.raises(StorageError, match="no object 'nope/missing.bin'"):
        backend.local_path("nope/missing.bin")


def test_local_path_gives_the_bytes(backend, mlsys_home):
    backend.put_bytes("files/data.bin", b"payload")
    path = backend.local_path("files/data.bin")
    assert path.read_bytes() == b"payload"
    if isinstance(backend, S3Backend):
        # downloaded once into the cache under $MLSYS_HOME, and no partial download is left there
        assert mlsys_home / "cache" / "s3" in path.parents
        assert backend.local_path("files/data.bin") == path
        assert _tmp_files(mlsys_home / "cache") == []


def test_uri(backend, mlsys_home):
    if isinstance(backend, S3Backend):
        assert backend.uri("datasets/x/1") == f"s3://{backend.bucket}/mlsys/datasets/x/1"
    else:
        assert backend.uri("datasets/x/1") == str((mlsys_home / "storage" / "datasets/x/1").resolve())


# -- local only ----------------------------------------------------------------


@pytest.mark.parametrize("key", ["../outside.txt", "a/../../outside.txt", "/etc/passwd"])
def test_local_key_escaping_the_root_is_rejected(tmp_path, key):
    backend = LocalBackend(tmp_path / "root")
    with pytest.raises(StorageError, match="escapes the storage root"):
        backend.put_bytes(key, b"x")
    with pytest.raises(StorageError, match="escapes the storage root"):
        backend.get_bytes(key)
    assert not (tmp_path / "outside.txt").exists()


def test_local_symlink_out_of_the_root_is_rejected(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageError, match="escapes the storage root"):
        LocalBackend(root).put_bytes("link/x.txt", b"x")


def test_local_file_uri_and_plain_path_agree(tmp_path):
    assert backend_for(f"file://{tmp_path}").root == backend_for(str(tmp_path)).root == str(tmp_path.resolve())


def test_local_put_leaves_no_temporary_files(tmp_path):
    backend = LocalBackend(tmp_path)
    backend.put_bytes("a/b.bin", b"1")
    src = tmp_path / "src"
    src.write_bytes(b"2")
    backend.put_file("a/c.bin", src)
    assert _tmp_files(tmp_path) == []
    assert backend.list("a/") == ["a/b.bin", "a/c.bin"]


def test_local_list_hides_temporary_files(tmp_path):
    backend = LocalBackend(tmp_path)
    backend.put_bytes("a/b.bin", b"1")
    (tmp_path / "a" / ".tmp-leftover").write_bytes(b"partial")
    assert backend.list("") == ["a/b.bin"]


@pytest.mark.parametrize("failure", ["replace", "fsync", "bad-data"])
def test_local_failing_put_bytes_keeps_the_previous_object(tmp_path, monkeypatch, failure):
    backend = LocalBackend(tmp_path)
    backend.put_bytes("obj.bin", b"previous")
    data: object = b"new content"
    if failure == "bad-data":
        data = "not bytes"  # the write itself fails
    else:
        def boom(*args, **kwargs):
            raise OSError(f"simulated {failure} failure")

        monkeypatch.setattr(os, failure, boom)
    with pytest.raises((OSError, TypeError)):
        backend.put_bytes("obj.bin", data)  # type: ignore[arg-type]
    monkeypatch.undo()
    assert backend.get_bytes("obj.bin") == b"previous"
    assert _tmp_files(tmp_path) == []
    assert backend.list("") == ["obj.bin"]


def test_local_failing_put_file_keeps_the_previous_object(tmp_path, monkeypatch):
    backend = LocalBackend(tmp_path / "root")
    backend.put_bytes("obj.bin", b"previous")
    src = tmp_path / "src.bin"
    src.write_bytes(b"new content")

    def boom(*args, **kwargs):
        raise OSError("simulated replace failure")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        backend.put_file("obj.bin", src)
    monkeypatch.undo()
    assert backend.get_bytes("obj.bin") == b"previous"
    assert _tmp_files(tmp_path / "root") == []


def test_local_put_file_missing_source_leaves_nothing(tmp_path):
    backend = LocalBackend(tmp_path / "root")
    with pytest.raises(FileNotFoundError):
        backend.put_file("obj.bin", tmp_path / "does-not-exist")
    assert not backend.exists("obj.bin")
    assert _tmp_files(tmp_path / "root") == []


# -- URIs ----------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["gs://x", "gs://bucket/prefix", "http://example.com/data", "abfs://c@a/p"])
def test_unsupported_scheme_is_rejected(uri):
    with pytest.raises(StorageError, match="unsupported storage URI") as err:
        backend_for(uri)
    assert uri in str(err.value) and "s3://bucket/prefix" in str(err.value)


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix", "gs://bucket/prefix"])
def test_bad_s3_root_is_rejected(uri):
    with pytest.raises(StorageError, match="s3://bucket/prefix"):
        S3Backend(uri)


def test_s3_without_prefix(s3_root):
    bucket_root = s3_root.rsplit("/", 1)[0]  # s3://<bucket>
    backend = backend_for(bucket_root)
    assert backend.prefix == ""
    backend.put_bytes("top.txt", b"top")
    assert backend.get_bytes("top.txt") == b"top"
    assert backend.list("") == ["top.txt"]
    assert backend.uri("top.txt") == f"{bucket_root}/top.txt"


def test_s3_prefixes_are_isolated(s3_root):
    one = backend_for(s3_root)
    other = backend_for(s3_root + "-other")
    one.put_bytes("k.txt", b"one")
    other.put_bytes("k.txt", b"other")
    assert one.get_bytes("k.txt") == b"one"
    assert one.list("") == ["k.txt"]
    assert other.list("") == ["k.txt"]
