"""Training checkpoints: model, optimizer, RNG state and data position, per rank (torch only).

Layout under the checkpoint URI (a local folder, or s3://... through mlsys.storage)::

    step-00000040/rank-0.pt   rank 0's state after 40 optimizer steps
    step-00000040/rank-1.pt
    latest.json               {"step": 40}: written by rank 0 once every rank's file is stored

A checkpoint counts only once ``latest.json`` names it, so a job killed while
writing one resumes from the previous one. Every file is written atomically.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

LATEST = "latest.json"


class _LocalFolder:
    def __init__(self, path: str):
        self.base = Path(path.removeprefix("file://")).expanduser()

    def put_bytes(self, key: str, data: bytes) -> None:
        dest = self.base / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)

    def get_bytes(self, key: str) -> bytes:
        return (self.base / key).read_bytes()

    def exists(self, key: str) -> bool:
        return (self.base / key).is_file()

    def prune(self, keep: set[str]) -> None:
        for old in self.base.glob("step-*"):
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)


def _store(uri: str):
    if uri.startswith("s3://"):
        from mlsys.storage.backend import (
            backend_for,  # only S3 checkpoints need the mlsys storage layer
        )

        return backend_for(uri)
    return _LocalFolder(uri)


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
        buf = io.BytesIO()
        torch.save(state, buf)
        self.store.put_bytes(f"{self._folder(step)}/rank-{self.rank}.pt", buf.getvalue())

    def commit(self, step: int) -> None:
        previous = self.latest()
        self.store.put_bytes(LATEST, json.dumps({"step": step}).encode())
        if hasattr(self.store, "prune"):  # keep the new checkpoint and the one before it
            self.store.prune({self._folder(step)} | ({self._folder(previous)} if previous is not None else set()))

    def load(self, step: int) -> dict[str, Any]:
        data = self.store.get_bytes(f"{self._folder(step)}/rank-{self.rank}.pt")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
