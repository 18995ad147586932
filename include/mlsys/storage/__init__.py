"""Datasets (Parquet, immutable, content-addressed), their forward-only pointers and ingest snapshots,
and files under a local or S3 root."""

from mlsys.storage.backend import LocalBackend, S3Backend, backend_for
from mlsys.storage.dataset import DatasetRef, DatasetStore
from mlsys.storage.pointers import Move
from mlsys.storage.snapshot import Snapshot

__all__ = ["DatasetRef", "DatasetStore", "LocalBackend", "Move", "S3Backend", "Snapshot", "backend_for"]
