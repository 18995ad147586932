"""Quarantine: the rows that break row-level rules, each with its reason; the clean remainder.

Only error anomalies that single rows cause (a missing value in a required
column, a value out of range or outside the domain, a bad length, a duplicate)
send rows here. Nothing is dropped unseen: every row is either in the clean
remainder or in the quarantine dataset with a ``_quarantine_reason``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlsys.validation.anomalies import (ERROR, NOT_UNIQUE, OUT_OF_RANGE, STRING_LENGTH, TOO_MANY_MISSING,
                                        UNEXPECTED_VALUES, Anomaly)
from mlsys.validation.schema import Schema

if TYPE_CHECKING:
    import pandas as pd

REASON = "_quarantine_reason"
ROW = "_row"


def reasons(df: "pd.DataFrame", schema: Schema, anomalies: list[Anomaly]) -> "pd.Series":
    """Per row, the rules it breaks joined by '; ' ('' for a clean row)."""
    import numpy as np
    import pandas as pd

    out = pd.Series([""] * len(df), index=df.index, dtype=object)
    for a in anomalies:
        if a.severity != ERROR or not a.row_level or a.column not in df.columns:
            continue
        s, rule = df[a.column], schema.columns.get(a.column, {})
        if a.type == TOO_MANY_MISSING:
            mask, why = s.isna(), f"{a.column} is missing"
        elif a.type == OUT_OF_RANGE:
            x = pd.to_numeric(s, errors="coerce")
            lo, hi = rule.get("min"), rule.get("max")
            mask = pd.Series(False, index=df.index)
            if lo is not None:
                mask |= x < lo
            if hi is not None:
                mask |= x > hi
            why = f"{a.column} outside [{lo}, {hi}]"
        elif a.type == UNEXPECTED_VALUES:
            mask, why = s.notna() & ~s.isin(list(rule.get("domain", []))), f"{a.column} not in its domain"
        elif a.type == STRING_LENGTH:
            n = s.astype("string").str.len()
            mask = pd.Series(False, index=df.index)
            if rule.get("min_length") is not None:
                mask |= n < rule["min_length"]
            if rule.get("max_length") is not None:
                mask |= n > rule["max_length"]
            why = f"{a.column} length outside [{rule.get('min_length')}, {rule.get('max_length')}]"
        elif a.type == NOT_UNIQUE:
            mask, why = s.duplicated(keep="first") & s.notna(), f"{a.column} duplicates an earlier row"
        else:
            continue
        mask = mask.fillna(False).to_numpy(dtype=bool)
        hit = out[mask]
        out[mask] = np.where(hit == "", why, hit + "; " + why)
    return out


def split(df: "pd.DataFrame", row_reasons: "pd.Series") -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """(clean remainder, quarantined rows with ``_row`` = position in the input and ``_quarantine_reason``)."""
    bad = row_reasons != ""
    quarantined = df[bad.to_numpy()].copy()
    quarantined.insert(0, ROW, [int(i) for i in bad.to_numpy().nonzero()[0]])
    quarantined[REASON] = row_reasons[bad].to_numpy()
    return df[~bad.to_numpy()].reset_index(drop=True), quarantined.reset_index(drop=True)
