"""Column statistics of a dataset, computed column-wise with pyarrow and numpy.

Per column: count, missing fraction and type; min / max / mean / std,
quantiles and a histogram for numbers; distinct count and the most frequent
values for every column; length statistics for strings.

Numbers are summarised through their value counts (a hash aggregation) when a
column has few distinct values: exact quantiles and histograms then cost a
sort of the distinct values, not of the rows. Columns run in a thread pool
(pyarrow and numpy release the GIL).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsys.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 10
TOP_K = 100  # enough to infer a categorical domain (inference.DOMAIN_MAX)
NUMERIC = ("int", "float")
# A string column is "mixed" when this share of its values parse as numbers but not all do.
_NUMBER_RE = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


@dataclass(frozen=True)
class ColumnStatistics:
    name: str
    type: str  # int | float | string | bool | list | timestamp | other:<arrow type>
    count: int  # present (non-missing) values
    missing: int
    distinct: int | None = None
    top: list[list[Any]] = field(default_factory=list)  # [[value, count], ...], most frequent first
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = field(default_factory=dict)  # "p50" -> value
    histogram: dict[str, list[float]] = field(default_factory=dict)  # edges (bins + 1), counts (bins)
    integral: bool | None = None  # floats only: every present value is a whole number (an int column with nulls)
    min_length: int | None = None
    max_length: int | None = None
    mean_length: float | None = None
    numeric_values: int | None = None  # strings only: how many values parse as numbers

    @property
    def rows(self) -> int:
        return self.count + self.missing

    @property
    def missing_fraction(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @property
    def mixed(self) -> bool:
        """A string column whose values are mostly, but not all, numbers: a number column with stray text."""
        return self.type == "string" and bool(self.numeric_values) and self.count > 0 and (
            0.5 <= self.numeric_values / self.count < 1.0)


@dataclass(frozen=True)
class DatasetStatistics:
    rows: int
    columns: dict[str, ColumnStatistics]

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "columns": {n: asdict(c) for n, c in self.columns.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DatasetStatistics":
        return cls(rows=int(data["rows"]), columns={n: ColumnStatistics(**c) for n, c in data["columns"].items()})

    def table(self) -> "pd.DataFrame":
        """One row per column: the summary shown in MLflow and by ``mlsys stats``."""
        import pandas as pd

        rows = []
        for c in self.columns.values():
            rows.append({
                "column": c.name, "type": c.type, "count": c.count, "missing_fraction": round(c.missing_fraction, 4),
                "distinct": c.distinct, "min": c.min, "max": c.max, "mean": c.mean, "std": c.std,
                "p50": c.quantiles.get("p50"), "min_length": c.min_length, "max_length": c.max_length,
                "top": ", ".join(f"{v}: {n}" for v, n in c.top[:3]),
            })
        return pd.DataFrame(rows)


def to_arrow(data: "pd.DataFrame | pa.Table") -> "pa.Table":
    """An Arrow table from a DataFrame; a column of mixed Python types is a DataError naming it."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    try:
        return pa.Table.from_pandas(data, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        for name in data.columns:
            try:
                pa.array(data[name], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                kinds = sorted({type(v).__name__ for v in data[name].dropna().head(10_000)})
                raise DataError(
                    f"column {name!r} mixes value types {kinds}: give it one type (e.g. convert it with astype) "
                    f"before validating ({exc})"
                ) from exc
        raise


def kind_of(arrow_type: "pa.DataType") -> str:
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "list"
    if pa.types.is_temporal(t):
        return "timestamp"
    if pa.types.is_null(t):
        return "float"  # an all-missing column: no type to see; numbers is the loosest guess
    return f"other:{t}"


def compute(data: "pd.DataFrame | pa.Table", workers: int | None = None) -> DatasetStatistics:
    """Statistics of every column of ``data``."""
    table = to_arrow(data)
    names = table.column_names
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"duplicate column names {dupes}: rename them so each column has one name")
    workers = workers or min(len(names), os.cpu_count() or 1)
    if workers <= 1:
        cols = [_column(n, table.column(n)) for n in names]
    else:
        with ThreadPoolExecutor(workers) as pool:
            cols = list(pool.map(lambda n: _column(n, table.column(n)), names))
    return DatasetStatistics(rows=table.num_rows, columns={c.name: c for c in cols})


def _py(value: Any) -> Any:
    """A JSON-safe Python scalar."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _top(values: "np.ndarray", counts: "np.ndarray") -> list[list[Any]]:
    import numpy as np

    order = np.argsort(-counts, kind="stable")[:TOP_K]
    return [[_py(values[i]), int(counts[i])] for i in order]


def _column(name: str, col: "pa.ChunkedArray") -> ColumnStatistics:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = kind_of(col.type)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if kind == "float" and not pa.types.is_null(col.type):
        col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)  # NaN is missing, as in pandas
    missing = col.null_count
    count = len(col) - missing
    base = {"name": name, "type": kind, "count": count, "missing": missing}
    if count == 0 or kind.startswith("other:") or kind == "timestamp":
        return ColumnStatistics(**base)
    present = pc.drop_null(col)
    if kind == "list":
        lengths = pc.list_value_length(present).to_numpy()
        return ColumnStatistics(**base, min_length=int(lengths.min()), max_length=int(lengths.max()),
                                mean_length=float(lengths.mean()))
    vc = pc.value_counts(present)
    values = vc.field("values")
    counts = vc.field("counts").to_numpy()
    distinct = len(values)
    if kind in ("string", "bool"):
        extra: dict[str, Any] = {}
        if kind == "string":
            lengths = pc.utf8_length(values).to_numpy()
            numeric = pc.match_substring_regex(values, _NUMBER_RE).to_numpy(zero_copy_only=False)
            extra = {"min_length": int(lengths.min()), "max_length": int(lengths.max()),
                     "mean_length": float((lengths * counts).sum() / count),
                     "numeric_values": int(counts[numeric].sum())}
        return ColumnStatistics(**base, distinct=distinct, top=_top(values.to_numpy(zero_copy_only=False), counts),
                                **extra)
    # numbers
    x = present.to_numpy().astype(np.float64, copy=False)
    vals = values.to_numpy().astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    mean, std = float(x.mean()), float(x.std())
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1) if hi > lo else np.array([lo, lo + 1.0])
    if distinct * 4 <= count:  # few distinct values: exact quantiles and histogram from the value counts
        order = np.argsort(vals)
        sv, sc = vals[order], counts[order]
        cum = np.cumsum(sc)
        pos = np.asarray(QUANTILES) * (count - 1)
        below, above = np.floor(pos), np.ceil(pos)
        v_lo = sv[np.searchsorted(cum, below, side="right")]
        v_hi = sv[np.searchsorted(cum, above, side="right")]
        qs = v_lo + (v_hi - v_lo) * (pos - below)  # linear interpolation, as numpy.quantile
        hist = np.histogram(sv, bins=edges, weights=sc)[0]
    else:
        qs = np.quantile(x, QUANTILES)
        hist = np.histogram(x, bins=edges)[0]
    integral = bool(np.all(np.mod(vals, 1.0) == 0)) if kind == "float" else None
    return ColumnStatistics(
        **base, distinct=distinct, top=_top(values.to_numpy(), counts), min=lo, max=hi, mean=mean, std=std,
        quantiles={f"p{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, qs)},
        histogram={"edges": [float(e) for e in edges], "counts": [float(c) for c in hist]}, integral=integral,
    )


def save(stats: DatasetStatistics, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats.to_json(), indent=2, default=str))
    return path
