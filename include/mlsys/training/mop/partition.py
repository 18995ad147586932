"""The training data, shuffled once and cut into one partition per worker, in storage (torch only).

    <uri>/parts.json        {"partitions": p, "rows": [n0, n1, ...], "bytes": [...]}
    <uri>/part-00000.pt     {"inputs": [tensor (n0, ...)], "targets": [tensor (n0, ...)]}
    <uri>/part-00001.pt     ...

``uri`` is a local folder or ``s3://bucket/prefix`` (through ``mlsys.storage``, loaded only then). Rank r
of a MOP job reads ``part-r`` and nothing else: each worker holds 1/p of the data. Files are read with
``weights_only=True``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import torch

from mlsys.training.mop.trainee import Partition

INDEX = "parts.json"


def split(inputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], parts: int,
          seed: int = 0) -> list[Partition]:
    """Shuffle the rows once (seeded) and cut them into ``parts`` contiguous partitions of near-equal size."""
    n = int(inputs[0].shape[0])
    if parts < 1 or parts > n:
        raise ValueError(f"partitions={parts} is invalid for {n} rows: use between 1 and {n}")
    bad = [t.shape[0] for t in (*inputs, *targets) if t.shape[0] != n]
    if bad:
        raise ValueError(f"every input and target needs {n} rows (the first input's); got {bad}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [{"inputs": [x[idx].clone() for x in inputs], "targets": [y[idx].clone() for y in targets]}
            for idx in torch.tensor_split(order, parts)]


def nbytes(part: Partition) -> int:
    """Bytes of the tensors a worker holds for ``part``."""
    return sum(t.numel() * t.element_size() for t in (*part["inputs"], *part["targets"]))


def _key(index: int) -> str:
    return f"part-{index:05d}.pt"


class _Folder:
    """put/get/exists of bytes under a local folder or an S3 prefix."""

    def __init__(self, uri: str):
        if not uri:
            raise ValueError("partition uri='' is invalid: give a folder or s3://bucket/prefix")
        self.uri = uri
        if uri.startswith("s3://"):
            from mlsys.storage.backend import backend_for  # only S3 needs the storage layer (boto3)

            self.s3 = backend_for(uri)
        else:
            self.s3, self.path = None, Path(uri.removeprefix("file://")).expanduser()

    def put(self, key: str, data: bytes) -> None:
        if self.s3 is not None:
            return self.s3.put_bytes(key, data)
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".tmp-{key}"
        tmp.write_bytes(data)
        tmp.replace(self.path / key)  # a reader sees the whole file or none

    def get(self, key: str) -> bytes:
        if self.s3 is not None:
            return self.s3.get_bytes(key)
        return (self.path / key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.s3.exists(key) if self.s3 is not None else (self.path / key).is_file()


def write(parts: Sequence[Partition], uri: str) -> dict:
    """Store the partitions, then the index (last: its presence means every partition is there)."""
    folder = _Folder(uri)
    for i, part in enumerate(parts):
        buf = io.BytesIO()
        torch.save(part, buf)
        folder.put(_key(i), buf.getvalue())
    index = {"partitions": len(parts), "rows": [int(p["inputs"][0].shape[0]) for p in parts],
             "bytes": [nbytes(p) for p in parts]}
    folder.put(INDEX, json.dumps(index).encode())
    return index


def index(uri: str) -> dict | None:
    """The index of the partitions under ``uri``; None when none were (completely) written there."""
    folder = _Folder(uri)
    return json.loads(folder.get(INDEX)) if folder.exists(INDEX) else None


def read(uri: str, i: int) -> Partition:
    """Partition ``i`` alone."""
    found = index(uri)
    if found is None:
        raise FileNotFoundError(f"no partitions under {uri!r} ({INDEX} missing): write them with partition.write")
    if not 0 <= i < found["partitions"]:
        raise ValueError(f"partition {i} does not exist under {uri!r}: it holds {found['partitions']} "
                         f"(run one worker per partition)")
    return torch.load(io.BytesIO(_Folder(uri).get(_key(i))), map_location="cpu", weights_only=True)
