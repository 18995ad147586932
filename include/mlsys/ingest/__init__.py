"""ingest: raw comment CSVs become versioned datasets (unlabeled pool, expert gold, test)."""

from mlsys.ingest.stage import IngestResult, IngestSpec, read_csvs, run

__all__ = ["IngestResult", "IngestSpec", "read_csvs", "run"]
