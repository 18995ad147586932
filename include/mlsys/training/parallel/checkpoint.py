"""Training checkpoints: model, optimizer, RNG state and data position, per rank (torch only).

Layout under the checkpoint URI (a local folder, or s3://... through mlsys.storage)::

    step-00000040/rank-0.pt   rank 0's state after 40 optimizer steps
    step-00000040/rank-1.pt
    latest.json               {"step": 40}: written by rank 0 once every rank's file is stored

A checkpoint counts only once ``latest.json`` names it, so a job killed while
writing one resumes from the previous one. Every file is written atomically: a
local write that fails removes its ``.tmp-*`` file, and a commit sweeps those a
killed writer left. A commit keeps the new checkpoint and the one before it, on
local disk and on S3 alike.

Checkpoints are read back with ``torch.load(weights_only=True)``: a file on shared
storage can never run code when loaded. ``save`` therefore takes only tensors and
plain data (dicts, lists, tuples, str, int, float, bool, None), and names the
first value that is not.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

LATEST = "latest.json"


class _LocalFolder:
    def __init__(self, path: str):
        self.base = Path(path.removeprefix("file://")).expanduser()

    def put_bytes(self, key: str, data: bytes) -> None:
        dest = self.base / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)  # a failed write leaves nothing behind
            raise
        _fsync_dir(dest.parent)  # the rename itself survives a crash

    def get_bytes(self, key: str) -> bytes:
        return (self.base / key).read_bytes()

    def exists(self, key: str) -> bool:
        return (self.base / key).is_file()

    def prune(self, keep: set[str]) -> None:
        """Remove the step folders older than ``keep``, and the ``.tmp-*`` files killed writers left in the rest."""
        for old in self.base.glob("step-*"):
            if _stale(old.name, keep):
                shutil.rmtree(old, ignore_errors=True)
        for folder in [self.base, *(self.base / k for k in keep)]:
            for tmp in folder.glob(".tmp-*"):  # every rank's file of the kept steps is stored: no write is in flight
                tmp.unlink(missing_ok=True)


def _stale(folder: str, keep: set[str]) -> bool:
    """A step folder older than the newest kept one and not kept; a newer one may be a save in flight."""
    return folder not in keep and folder < max(keep)  # step-%08d: the names sort as the steps do


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # a platform that cannot open folders
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _S3Folder:
    """An s3:// prefix through mlsys.storage; S3 puts are atomic, so only pruning is added here."""

    def __init__(self, uri: str):
        from mlsys.storage.backend import backend_for  # only S3 checkpoints need the mlsys storage layer

        self.backend = backend_for(uri)
        self.put_bytes, self.get_bytes, self.exists = self.backend.put_bytes, self.backend.get_bytes, self.backend.exists

    def prune(self, keep: set[str]) -> None:
        old = [k for k in self.backend.list("step-") if _stale(k.split("/", 1)[0], keep)]
        if callable(getattr(self.backend, "delete", None)):
            for key in old:
                self.backend.delete(key)
            return
        keys = [urlparse(self.backend.uri(k)).path.lstrip("/") for k in old]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            self.backend.client.delete_objects(Bucket=self.backend.bucket,
                                               Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})


def _store(uri: str):
    return _S3Folder(uri) if uri.startswith("s3://") else _LocalFolder(uri)


def _check_plain(value: Any, where: str = "state") -> None:
    """Only what ``torch.load(weights_only=True)`` reads back: tensors and plain data."""
    if isinstance(value, (torch.Tensor, str, int, float, bool, type(None), torch.dtype, torch.device)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint {where} has a key {k!r} of type {type(k).__name__}; use str or int keys")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"checkpoint {where} is a {type(value).__name__}, which weights_only loading refuses; "
                    "store tensors, or plain data (dict, list, str, int, float, bool, None) such as its JSON form")


class Checkpointer:
    def __init__(self, uri: str, rank: int = 0):
        if not uri:
            raise ValueError("Checkpointer uri='' is invalid: give a folder or s3://bucket/prefix")
        self.uri, self.rank = uri, rank
        self.store = _store(uri)

    @staticmethod
    def _folder(step: int) -> str:
        return f"step-{step:08d}"

    def latest(self) -> int | None:
        if not self.store.exists(LATEST):
            return None
        return int(json.loads(self.store.get_bytes(LATEST))["step"])

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Store this rank's state for ``step``; call ``commit`` on rank 0 after every rank saved."""
        _check_plain(state)
        buf = io.BytesIO()
        torch.save(state, buf)
        self.store.put_bytes(f"{self._folder(step)}/rank-{self.rank}.pt", buf.getvalue())

    def commit(self, step: int) -> None:
        previous = self.latest()
        self.store.put_bytes(LATEST, json.dumps({"step": step}).encode())
        # keep the new checkpoint and the one before it
        self.store.prune({self._folder(step)} | ({self._folder(previous)} if previous is not None else set()))

    def load(self, step: int) -> dict[str, Any]:
        data = self.store.get_bytes(f"{self._folder(step)}/rank-{self.rank}.pt")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # never runs code from storage


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
