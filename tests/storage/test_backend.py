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


# -- durability and conditional writes ------------------------------------------------


def test_local_put_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    """The rename that publishes an object is durable only once its folder is fsynced."""
    import stat

    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    backend = LocalBackend(tmp_path)
    backend.put_bytes("a/b.bin", b"1")
    assert synced == [False, True]  # the file, then its folder
    src = tmp_path / "src"
    src.write_bytes(b"2")
    synced.clear()
    backend.put_file("a/c.bin", src)
    assert synced == [False, True]


@pytest.fixture(params=["local", "s3-native", "s3-create-only", "s3-none"])
def cas_backend(request, mlsys_home):
    if request.param == "local":
        return LocalBackend(mlsys_home / "storage")
    mode = request.param.removeprefix("s3-")
    return S3Backend(request.getfixturevalue("s3_root"), conditional_writes=mode,
                     lease_options={"write_bound_s": 0.1, "settle_s": 0.15, "ttl_s": 5})


def test_put_if_absent_creates_once(cas_backend):
    assert cas_backend.put_if_absent("c/k.json", b"first")
    assert not cas_backend.put_if_absent("c/k.json", b"second")
    assert cas_backend.get_bytes("c/k.json") == b"first"
    assert cas_backend.list("") == ["c/k.json"]  # no lock file, no lease object left behind


def test_put_if_match_is_compare_and_set(cas_backend):
    assert cas_backend.get_versioned("p.json") is None
    assert cas_backend.put_if_match("p.json", b"one", None)  # None: only if it does not exist
    assert not cas_backend.put_if_match("p.json", b"again", None)
    data, token = cas_backend.get_versioned("p.json")
    assert data == b"one"
    assert cas_backend.put_if_match("p.json", b"two", token)
    assert not cas_backend.put_if_match("p.json", b"stale", token)  # the token of what it read is gone
    assert cas_backend.get_bytes("p.json") == b"two"
    assert cas_backend.get_versioned("p.json")[1] != token
    assert cas_backend.list("") == ["p.json"]


def test_s3_detects_what_moto_supports(s3_root):
    """moto 5.2.5 answers If-None-Match and If-Match on PutObject: native compare-and-set; the probe is removed."""
    backend = S3Backend(s3_root)
    assert backend.conditional_writes == "native"
    assert backend.list("") == []


@pytest.mark.parametrize("endpoint, expected", [("ignores", "none"), ("no-if-match", "create-only")])
def test_s3_detects_endpoints_without_conditional_writes(s3_root, monkeypatch, endpoint, expected):
    from botocore.exceptions import ClientError

    backend = S3Backend(s3_root + "-" + endpoint)
    real = backend._raw_put

    def raw_put(key, data, **condition):
        if endpoint == "ignores":
            return real(key, data)  # the endpoint drops the headers and overwrites
        if "IfMatch" in condition:
            raise ClientError({"Error": {"Code": "NotImplemented", "Message": "If-Match"}}, "PutObject")
        return real(key, data, **condition)

    monkeypatch.setattr(backend, "_raw_put", raw_put)
    assert backend.conditional_writes == expected
    assert backend.list("") == []


def test_s3_lease_modes_never_send_if_match(s3_root, monkeypatch):
    for mode, allowed in (("create-only", {"IfNoneMatch"}), ("none", set())):
        backend = S3Backend(f"{s3_root}-{mode}", conditional_writes=mode,
                            lease_options={"write_bound_s": 0.1, "settle_s": 0.15})
        sent: list[tuple[str, set]] = []

        def raw_put(key, data, real=backend._raw_put, sent=sent, **condition):
            sent.append((key, set(condition)))
            return real(key, data, **condition)

        monkeypatch.setattr(backend, "_raw_put", raw_put)
        assert backend.put_if_match("p.json", b"1", None) and backend.put_if_absent("q.json", b"1")
        assert {c for _, conds in sent for c in conds} == allowed
        assert any(k.startswith("_leases/") for k, _ in sent)  # the writes went through a lease
        assert backend.list("") == ["p.json", "q.json"]  # and the lease was released


@pytest.mark.parametrize("mode", ["create-only", "none"])
def test_s3_lease_held_by_another_writer_blocks_and_an_expired_one_is_broken(s3_root, mode):
    import json
    import time

    backend = S3Backend(s3_root, conditional_writes=mode,
                        lease_options={"write_bound_s": 0.1, "settle_s": 0.15, "wait_s": 0.6})
    lease = "_leases/p.json"
    backend.put_bytes(lease, json.dumps({"owner": "other", "host": "h", "pid": 1, "expires_at": time.time() + 60}).encode())
    with pytest.raises(StorageError, match="could not take the lease .* held by h pid 1"):
        backend.put_if_match("p.json", b"1", None)
    assert not backend.exists("p.json")
    backend.put_bytes(lease, json.dumps({"owner": "dead", "host": "h", "pid": 1, "expires_at": time.time() - 1}).encode())
    assert backend.put_if_match("p.json", b"1", None)  # its holder died: the lease expired and is taken over
    assert backend.list("") == ["p.json"]


def test_s3_cache_is_keyed_by_etag(s3_root, mlsys_home):
    """A changed object is downloaded again; the cache never serves the old bytes."""
    backend = backend_for(s3_root)
    backend.put_bytes("files/obj.bin", b"one")
    first = backend.local_path("files/obj.bin")
    assert first.read_bytes() == b"one"
    backend.put_bytes("files/obj.bin", b"two")
    second = backend.local_path("files/obj.bin")
    assert second.read_bytes() == b"two" and second != first
    assert backend.local_path("files/obj.bin") == second


def test_s3_cache_is_keyed_by_endpoint_and_bucket(s3_root, moto_server, mlsys_home):
    from urllib.parse import urlparse

    backend = backend_for(s3_root)
    backend.put_bytes("k.bin", b"x")
    path = backend.local_path("k.bin")
    endpoint = urlparse(moto_server).netloc.replace(":", "_")
    assert path.relative_to(mlsys_home / "cache" / "s3").parts[:3] == (endpoint, backend.bucket, "mlsys")
    # the same bucket and key on another endpoint is another cache entry
    elsewhere = backend.cache_path("k.bin", '"etag"')
    backend.endpoint = "https://minio.example:9000"
    assert backend.cache_path("k.bin", '"etag"') != elsewhere
