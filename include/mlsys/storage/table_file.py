"""CSV and Parquet files given by path (``mlsys stats/validate --data``, ``mlsys label --data/--gold/--out``):
read with clear errors, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlsys.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


CSV_SUFFIXES = (".csv", ".txt", ".tsv", ".gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(path: str | Path, what: str = "data file", string_columns: tuple[str, ...] = ()) -> "pa.Table":
    """A CSV file, a Parquet file or a folder of Parquet files as an Arrow table, or a DataError naming the problem.

    CSV: a header row, UTF-8, quoted fields may hold newlines, empty cells are missing values (as in
    pandas.read_csv); ``string_columns`` are read as text whatever they look like (ids).
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} {str(path)!r} does not exist (file not found); give a CSV or Parquet file "
                        "(or a folder of Parquet files)")
    suffix = p.suffix.lower()
    if not p.is_dir() and suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise DataError(f"{what} {str(path)!r}: unknown format {suffix!r}; use .csv or .parquet")
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(f"{what} {str(path)!r} is empty (0 bytes); it needs a header row and at least one data row")
    try:
        if p.is_dir() or suffix in PARQUET_SUFFIXES:
            table = pq.read_table(p)
        else:
            table = pcsv.read_csv(
                p, parse_options=pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(strings_can_be_null=True,
                                                    column_types={c: pa.string() for c in string_columns}))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as exc:
        if p.is_file() and ("UTF8" in str(exc) or isinstance(exc, UnicodeDecodeError)):
            raise DataError(f"{what} {str(path)!r} is not UTF-8 text ({_utf8_error(p)}); re-encode the file as UTF-8") from exc
        kind = "parquet" if p.is_dir() or suffix in PARQUET_SUFFIXES else "csv"
        raise DataError(f"{what} {str(path)!r} could not be read as {kind}: {exc}") from exc
    if p.is_file() and suffix in CSV_SUFFIXES and any(pa.types.is_binary(t) for t in table.schema.types):
        # Arrow reads a column with bytes that are not UTF-8 as binary rather than failing
        raise DataError(f"{what} {str(path)!r} is not UTF-8 text ({_utf8_error(p)}); re-encode the file as UTF-8")
    if table.num_columns == 0:
        raise DataError(f"{what} {str(path)!r} has no columns; it needs a header row")
    if table.num_rows == 0:
        raise DataError(f"{what} {str(path)!r} has a header but no rows")
    return table


def read_frame(path: str | Path, id_column: str, what: str) -> "pd.DataFrame":
    """``read_table`` as a DataFrame; integer ids stay integers (a CSV's plainly written ones become int64),
    any other ids are strings."""
    from mlsys.datasets import typed_ids

    df = read_table(path, what, string_columns=(id_column,)).to_pandas()
    if id_column in df.columns and not _is_integer(df[id_column]):
        df[id_column] = typed_ids(df[id_column].astype(str))
    return df


def _is_integer(col) -> bool:
    import pandas as pd

    return pd.api.types.is_integer_dtype(col.dtype)


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
