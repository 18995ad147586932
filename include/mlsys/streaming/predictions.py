"""A stream's per-frame predictions: one small dataset version per segment, read back as one table.

Each committed segment's rows are one content-addressed version of ``video_predictions_<stream>``; its
metadata names the stream, the segment, its first frame and the version of the segment before it
(``extra["previous"]``). The watermark names the last committed segment's version, so the committed
predictions are the chain from there back to segment 1: what a segment costs to store does not grow with the
stream, and versions of uncommitted or refused runs (not on the chain) are never read.

    read_predictions(store, "camera")          # every committed frame, in order (pandas)
    read_predictions_table(store, "camera")    # the same as a pyarrow Table

``latest`` of the dataset is the last segment written, not the whole stream: read through these functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsys.datasets import VIDEO_PREDICTIONS_PREFIX
from mlsys.errors import DataError
from mlsys.storage import DatasetRef, DatasetStore
from mlsys.streaming import watermark

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


def dataset(stream: str) -> str:
    return VIDEO_PREDICTIONS_PREFIX + stream


def write_segment(store: DatasetStore, stream: str, seq: int, first_frame: int, rows: pa.Table, previous: str, *,
                  sources: dict[str, str] | None = None, created_by: dict[str, Any] | None = None,
                  extra: dict[str, Any] | None = None) -> DatasetRef:
    """Store one segment's rows as their own version, chained to ``previous`` (the version of segment ``seq - 1``)."""
    chain = {"stream": stream, "segment": seq, "first_frame": first_frame, "frames": rows.num_rows,
             "previous": previous}
    return store.write(dataset(stream), rows, sources=sources, created_by=created_by, extra={**(extra or {}), **chain})


def committed(store: DatasetStore, stream: str, mark: watermark.Watermark | None = None) -> list[DatasetRef]:
    """The versions of the committed segments up to the watermark (``mark``, default: the stored one), oldest first."""
    mark = watermark.read(store, stream) if mark is None else mark
    chain: list[DatasetRef] = []
    version, seq = mark.predictions, mark.segment
    while version:
        ref = store.ref(dataset(stream), version)
        if "previous" not in ref.extra:  # written before per-segment storage: one table of every frame so far
            chain.append(ref)
            break
        if ref.extra.get("segment") != seq:
            raise DataError(f"stream {stream!r}: predictions version {version} holds segment "
                            f"{ref.extra.get('segment')}, the chain expected segment {seq}; the store was edited "
                            "by hand or by another tool")
        chain.append(ref)
        version, seq = ref.extra["previous"], seq - 1
    chain.reverse()
    frames = sum(r.rows for r in chain)
    if frames != mark.frames:
        raise DataError(f"stream {stream!r}: the watermark counts {mark.frames} frames up to segment {mark.segment}, "
                        f"its predictions hold {frames}; the store was edited by hand or by another tool")
    return chain


def read_predictions_table(store: DatasetStore, stream: str, mark: watermark.Watermark | None = None,
                           columns: list[str] | None = None) -> pa.Table:
    """Every committed frame of ``stream`` (up to ``mark``, default: the watermark), in frame order."""
    import pyarrow as pa

    tables = [store.read_table(ref.name, ref.version, columns) for ref in committed(store, stream, mark)]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def read_predictions(store: DatasetStore, stream: str, mark: watermark.Watermark | None = None,
                     columns: list[str] | None = None) -> pd.DataFrame:
    """``read_predictions_table`` as a pandas DataFrame."""
    return read_predictions_table(store, stream, mark, columns).to_pandas()
