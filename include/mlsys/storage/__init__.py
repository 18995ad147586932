"""Datasets (Parquet, immutable, content-addressed) and files under a local or S3 root."""

from mlsys.storage.backend import LocalBackend, S3Backend, backend_for
from mlsys.storage.dataset import DatasetRef, DatasetStore

__all__ = ["DatasetRef", "DatasetStore", "LocalBackend", "S3Backend", "backend_for"]
