"""Schema inference from statistics (GX 1.x infers nothing, so this is ours).

The rules, chosen so that the result reads like a schema a person would write:

- type: the column's type; a float column holding only whole numbers is ``int``
  (an integer column with missing values, as pandas reads it);
- presence: ``required`` when no value is missing, else ``min_presence`` a few
  points below the observed share (a column that is almost always empty gets no rule);
- numbers: ``min``/``max`` = the observed range;
- strings with few distinct values (at most ``DOMAIN_MAX``, and at most 10% of
  the values): a ``domain``; other strings: a length range;
- drift and skew thresholds for categorical and numeric columns that are not
  identifier-like (at most half of their values distinct).
"""

from __future__ import annotations

import math

from mlsys.errors import DataError
from mlsys.validation.schema import TYPES, Schema
from mlsys.validation.statistics import ColumnStatistics, DatasetStatistics

DOMAIN_MAX = 100
PRESENCE_SLACK = 0.05
DRIFT = 0.1  # L-infinity (categorical) / Jensen-Shannon divergence (numbers)
SKEW = 0.1


def infer(stats: DatasetStatistics, dataset: str, label: str = "", min_rows: int | None = None) -> Schema:
    """A version-1 schema describing data with these statistics."""
    if label and label not in stats.columns:
        raise DataError(f"label column {label!r} is not in the data; its columns are {sorted(stats.columns)}")
    columns = {name: infer_column(col) for name, col in stats.columns.items()}
    return Schema(
        dataset=dataset, columns=columns, version=1, label=label,
        min_rows=min_rows if min_rows is not None else max(1, stats.rows // 10),
        description=f"inferred from {stats.rows} rows by mlsys schema infer; review, edit, bump version",
    )


def infer_column(col: ColumnStatistics) -> dict:
    if col.mixed:
        raise DataError(
            f"column {col.name!r} mixes types: {col.numeric_values} of its {col.count} values are numbers and the "
            f"rest text (e.g. {[v for v, _ in col.top if not _is_number(v)][:3]}); clean it or declare its type"
        )
    kind = col.type
    if kind == "float" and col.integral:
        kind = "int"
    if kind not in TYPES:
        raise DataError(f"column {col.name!r} has type {col.type!r}, which schemas cannot describe; "
                        f"convert it to one of {sorted(TYPES)}")
    rule: dict = {"type": kind}
    presence = 1.0 - col.missing_fraction
    if col.missing == 0:
        rule["required"] = True
    else:
        rule["required"] = False
        floor = math.floor((presence - PRESENCE_SLACK) * 100) / 100
        if floor > 0:
            rule["min_presence"] = floor
    if col.count == 0:
        return rule
    categorical = False
    if kind in ("int", "float") and col.min is not None:
        rule["min"] = _clean(col.min, kind)
        rule["max"] = _clean(col.max, kind)
    elif kind in ("string", "bool"):
        if col.distinct is not None and col.distinct <= DOMAIN_MAX and col.distinct <= max(2, 0.1 * col.count):
            rule["domain"] = sorted(v for v, _ in _all_values(col))
            categorical = True
        elif kind == "string" and col.min_length is not None:
            if col.min_length > 0:
                rule["min_length"] = 1
            rule["max_length"] = 2 * col.max_length  # free text: room to grow, still catches garbage
    if col.distinct == col.count and col.count > 1 and kind in ("string", "int"):
        rule["unique"] = True
    identifier_like = col.distinct is not None and col.distinct > 0.5 * col.count
    if (categorical or kind in ("int", "float")) and not identifier_like and (col.distinct or 0) > 1:
        rule["drift"] = DRIFT
        rule["skew"] = SKEW
    return rule


def _all_values(col: ColumnStatistics) -> list:
    if col.distinct is not None and col.distinct > len(col.top):
        raise DataError(f"column {col.name!r}: statistics keep only {len(col.top)} of its {col.distinct} values; "
                        "recompute them with a larger TOP_K")
    return col.top


def _clean(value: float, kind: str):
    return int(value) if kind == "int" else float(value)


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
