"""CSV and Parquet files for ``mlsys label --data PATH --out PATH``: read with clear errors, write atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlsys.errors import DataError

if TYPE_CHECKING:
    import pandas as pd


def read_table(path: str, id_column: str, what: str) -> "pd.DataFrame":
    """A CSV file, a Parquet file or a folder of Parquet files; ids read as strings."""
    import pandas as pd
    import pyarrow as pa

    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} {path!r} does not exist; give a CSV or Parquet file (or a Parquet folder)")
    if p.is_dir() or p.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(p)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{what} {path!r} is not readable Parquet ({exc})") from exc
    elif p.suffix.lower() in (".csv", ".txt", ".tsv"):
        try:
            df = pd.read_csv(p, dtype={id_column: str}, encoding="utf-8", sep="\t" if p.suffix.lower() == ".tsv" else ",")
        except UnicodeDecodeError as exc:
            raise DataError(f"{what} {path!r} is not UTF-8 text ({_utf8_error(p)}); re-encode the file as UTF-8") from exc
        except pd.errors.EmptyDataError as exc:
            raise DataError(f"{what} {path!r} is empty; expected a header row") from exc
        except pd.errors.ParserError as exc:
            raise DataError(f"{what} {path!r}: malformed CSV ({exc}); fix or remove the row") from exc
    else:
        raise DataError(f"{what} {path!r}: unknown file type {p.suffix!r}; use .csv or .parquet")
    if id_column in df.columns:
        df[id_column] = df[id_column].astype(str)
    if df.empty:
        raise DataError(f"{what} {path!r} has no rows")
    return df


def _utf8_error(path: Path) -> str:
    """Where the first non-UTF-8 byte of a file is (pandas reports offsets inside its read chunks)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        return f"{exc.reason} at byte {exc.start}, line {line}"
    return "undecodable bytes"


def write_table(df: "pd.DataFrame", path: str) -> str:
    """Write Parquet to ``path`` (a file if it ends in .parquet, else a folder with one part file).

    The file is written beside its destination and renamed into place, so a failure never leaves
    a half-written output, and an existing output is replaced only by a complete new one.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    dest = Path(path)
    target = dest if dest.suffix.lower() == ".parquet" else dest / "part-0.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mlsys-label-", suffix=".parquet", dir=target.parent)
    os.close(fd)
    try:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(dest)
