"""Anomalies: what is wrong with a dataset, against its schema and a reference span.

Each anomaly has a type, the column, the observed and the expected value, and
a severity. ``error`` stops the pipeline; ``warning`` passes and is logged.

Schema rules are checked by GX (``engine.check``) and its failures are mapped to
anomaly types here; what GX cannot express (new columns, drift, skew, the
label in serving data) is computed from the data and its statistics.

Benign changes are warnings that come with a proposed schema update:
a new categorical value held by at most ``BENIGN_SHARE`` of the rows, a range
overshot by at most ``BENIGN_WIDEN`` of its width (by at most ``BENIGN_SHARE``
of the rows), a new column; never on a ``closed`` column.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlsys.validation import distance
from mlsys.validation.schema import Schema
from mlsys.validation.statistics import DatasetStatistics

if TYPE_CHECKING:
    import pandas as pd

ERROR, WARNING = "error", "warning"
BENIGN_SHARE = 0.01
BENIGN_WIDEN = 0.10

MISSING_COLUMN = "missing_column"
NEW_COLUMN = "new_column"
TYPE_MISMATCH = "type_mismatch"
TOO_MANY_MISSING = "too_many_missing"
OUT_OF_RANGE = "out_of_range"
UNEXPECTED_VALUES = "unexpected_values"
STRING_LENGTH = "string_length"
NOT_UNIQUE = "not_unique"
TOO_FEW_ROWS = "too_few_rows"
DRIFT = "drift"
SKEW = "skew"
LABEL_IN_SERVING = "label_in_serving"

_BY_EXPECTATION = {
    "expect_table_row_count_to_be_between": TOO_FEW_ROWS,
    "expect_column_to_exist": MISSING_COLUMN,
    "expect_column_values_to_be_in_type_list": TYPE_MISMATCH,
    "expect_column_values_to_not_be_null": TOO_MANY_MISSING,
    "expect_column_values_to_be_between": OUT_OF_RANGE,
    "expect_column_values_to_be_in_set": UNEXPECTED_VALUES,
    "expect_column_value_lengths_to_be_between": STRING_LENGTH,
    "expect_column_values_to_be_unique": NOT_UNIQUE,
}


@dataclass(frozen=True)
class Anomaly:
    type: str
    column: str | None
    severity: str
    observed: Any
    expected: Any
    description: str
    rows: int | None = None  # rows that break the rule (row-level rules)
    row_level: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"({self.column})" if self.column else ""
        return f"{self.severity} {self.type}{where}: {self.description}"


def detect(
    df: "pd.DataFrame",
    stats: DatasetStatistics,
    schema: Schema,
    failed: list[dict[str, Any]],
    environment: str = "training",
    reference: "pd.DataFrame | None" = None,
) -> list[Anomaly]:
    """The anomalies of ``df``, from the GX failures of ``schema``'s suite, plus drift or skew against ``reference``.

    ``reference`` is the previous span in training (drift) and the training data in serving (skew).
    """
    found: list[Anomaly] = []
    expected = schema.expected_columns(environment)
    missing = [c for c in expected if c not in df.columns]
    mismatched: set[str] = set()
    for f in failed:
        kind = _BY_EXPECTATION.get(f["expectation"])
        column = f["column"]
        if kind is None or (column in missing and kind != MISSING_COLUMN):
            continue
        if kind == TYPE_MISMATCH:
            mismatched.add(column)
        if f.get("exception") and kind not in (MISSING_COLUMN, TYPE_MISMATCH):
            found.append(Anomaly(kind, column, ERROR, None, None, f"GX could not check {f['expectation']} on "
                                 f"{column!r}: {f['exception']}", details={"exception": f["exception"]}))
            continue
        found.append(_from_gx(kind, f, df, stats, schema))
    # other rules on a column of the wrong type say nothing new (GX cannot compare text with numbers)
    found = [a for a in found if not (a.column in mismatched and a.type != TYPE_MISMATCH)]
    for column in df.columns:
        if column in schema.columns:
            continue
        col = stats.columns[column]
        found.append(Anomaly(NEW_COLUMN, column, WARNING, col.type, "no such column in the schema",
                             f"column {column!r} ({col.type}) is not in schema {schema.dataset} v{schema.version}",
                             details={"type": col.type, "missing_fraction": round(col.missing_fraction, 4)}))
    if environment == "serving" and schema.label and schema.label in df.columns:
        found.append(Anomaly(LABEL_IN_SERVING, schema.label, WARNING, "present", "absent in serving",
                             f"serving data has the label column {schema.label!r}; serving requests carry no label"))
    if reference is not None:
        kind = SKEW if environment == "serving" else DRIFT
        skip = set(missing) | mismatched
        found.extend(_distances(df, reference, schema, kind, skip))
    return found


def _from_gx(kind: str, f: dict[str, Any], df: "pd.DataFrame", stats: DatasetStatistics, schema: Schema) -> Anomaly:
    column = f["column"]
    rule = schema.columns.get(column, {}) if column else {}
    col = stats.columns.get(column) if column else None
    rows = f.get("unexpected_count")
    if kind == TOO_FEW_ROWS:
        return Anomaly(kind, None, ERROR, stats.rows, f">= {schema.min_rows}",
                       f"{stats.rows} rows; the schema asks for at least {schema.min_rows}")
    if kind == MISSING_COLUMN:
        return Anomaly(kind, column, ERROR, "absent", rule.get("type", "string"),
                       f"column {column!r} is missing; the schema requires it")
    if kind == TYPE_MISMATCH:
        observed = ("int" if col.integral else col.type) if col else f.get("observed")
        text = f"column {column!r} holds {observed} values; the schema says {rule.get('type')}"
        if col is not None and col.mixed:
            text += (f"; it mixes types: {col.numeric_values} of {col.count} values are numbers, the rest text "
                     f"(e.g. {[v for v, _ in col.top if not _is_number(v)][:3]})")
        return Anomaly(kind, column, ERROR, observed, rule.get("type"), text, details={"gx_observed": f.get("observed")})
    if kind == TOO_MANY_MISSING:
        presence = schema.min_presence(column)
        observed = round(1.0 - col.missing_fraction, 4) if col else None
        return Anomaly(kind, column, ERROR, observed, f">= {presence}",
                       f"column {column!r} has a value in {observed:.2%} of rows; the schema asks for {presence:.0%}",
                       rows=rows, row_level=presence >= 1.0, details={"missing": col.missing if col else None})
    if kind == OUT_OF_RANGE:
        lo, hi = rule.get("min"), rule.get("max")
        obs_lo, obs_hi = (col.min, col.max) if col else (None, None)
        width = (hi - lo) if lo is not None and hi is not None and hi > lo else max(abs(lo or 0), abs(hi or 0), 1.0)
        over = max((lo - obs_lo) if lo is not None and obs_lo is not None else 0.0,
                   (obs_hi - hi) if hi is not None and obs_hi is not None else 0.0, 0.0)
        share = rows / col.count if rows is not None and col and col.count else 1.0  # unknown: never benign
        benign = over <= BENIGN_WIDEN * width and share <= BENIGN_SHARE and not rule.get("closed")
        return Anomaly(kind, column, WARNING if benign else ERROR, [obs_lo, obs_hi], [lo, hi],
                       f"{rows} values of {column!r} ({share:.2%}) lie outside [{lo}, {hi}]; observed range "
                       f"[{obs_lo}, {obs_hi}]" + (" (slightly wider: a schema update is proposed)" if benign else ""),
                       rows=rows, row_level=True, details={"share": share, "benign": benign})
    if kind == UNEXPECTED_VALUES:
        domain = list(rule.get("domain", []))
        present = df[column].dropna()
        bad = present[~present.isin(domain)]
        counts = bad.value_counts()
        share = len(bad) / len(present) if len(present) else 0.0
        values = [{"value": _py(v), "count": int(n), "share": round(int(n) / len(present), 6)} for v, n in counts.head(20).items()]
        benign = share <= BENIGN_SHARE and not rule.get("closed")
        return Anomaly(kind, column, WARNING if benign else ERROR, [v["value"] for v in values], domain,
                       f"{len(bad)} values of {column!r} ({share:.2%}) are outside its domain: "
                       + ", ".join(f"{v['value']!r} ({v['share']:.2%})" for v in values[:5])
                       + (" (a small share: a schema update is proposed)" if benign else ""),
                       rows=len(bad), row_level=True, details={"values": values, "share": share, "benign": benign})
    if kind == STRING_LENGTH:
        return Anomaly(kind, column, ERROR, [col.min_length, col.max_length] if col else None,
                       [rule.get("min_length"), rule.get("max_length")],
                       f"{rows} values of {column!r} have a length outside [{rule.get('min_length')}, {rule.get('max_length')}]",
                       rows=rows, row_level=True)
    # NOT_UNIQUE
    return Anomaly(kind, column, ERROR, f"{rows} duplicated values", "unique",
                   f"{rows} values of {column!r} are duplicates; the schema says it is unique", rows=rows, row_level=True)


def _distances(df, reference, schema: Schema, kind: str, skip: set[str]) -> list[Anomaly]:
    import numpy as np
    import pandas as pd

    found = []
    for name, rule in schema.columns.items():
        threshold = rule.get(kind)
        if threshold is None or name in skip or name not in df.columns or name not in reference.columns:
            continue
        categorical = "domain" in rule or rule.get("type", "string") in ("string", "bool")
        if categorical:
            value, at = distance.linf(reference[name], df[name])
            measure, details = "L-infinity", {"largest_at": _py(at)}
        else:
            cur = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            ref = pd.to_numeric(reference[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            value, measure, details = distance.numeric_js(ref, cur), "Jensen-Shannon divergence", {}
        if value > threshold:
            against = "the training data" if kind == SKEW else "the previous span"
            found.append(Anomaly(kind, name, ERROR, round(value, 6), f"<= {threshold}",
                                 f"{measure} of {name!r} against {against} is {value:.4f} > {threshold}",
                                 details={"measure": measure, **details}))
    return found


def errors(anomalies: list[Anomaly]) -> list[Anomaly]:
    return [a for a in anomalies if a.severity == ERROR]


def _py(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
