"""FastLFApplier: Snorkel's label matrix, fast.

Snorkel's ``PandasLFApplier`` calls every LF once per row through
``DataFrame.apply``. This applier gives the same matrix another way:

    ColumnLF (keyword_lf, regex_lf, ...)  one vectorised call over the whole column (pyarrow.compute)
    any other LabelingFunction            row by row over light row objects, the partitions of the
                                          frame in parallel worker processes (fork), one per core

    frame ──┬─ column LFs ───────────────────────────────► L[:, column LFs]
            └─ partition 0 ─ worker 0 ─┐
               partition 1 ─ worker 1 ─┴─ concatenate ───► L[:, row LFs]

An LF that raises fails the apply with ``LFError`` naming the LF and the row id,
unless ``fault_tolerant=True``: then it abstains on that row and the error is counted
per LF (``applier.errors``). An LF that returns anything but -1 or a class in
``0..cardinality-1`` fails with ``LFError`` too.
"""

from __future__ import annotations

import os
import traceback
from typing import TYPE_CHECKING, Sequence

from snorkel.labeling import LabelingFunction

from mlsys.errors import MlsysError
from mlsys.labeling.lf import ABSTAIN, ColumnLF, Columns, NullText

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

NOT_INT = -(2**62)  # stands for an LF output that is not a (small) integer, until _checked reports it
NOT_INT_LIMIT = 2**62

# Below this many rows a worker pool costs more than it saves.
MIN_ROWS_PER_WORKER = 20_000


class LFError(MlsysError):
    """A labeling function raised, or returned a value outside the classes."""


class Row(dict):
    """One data point: fields by attribute (``x.text``) or by key (``x["text"]``), like a pandas row."""

    __slots__ = ()

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):  # Snorkel preprocessors add fields this way
        self[name] = value


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class FastLFApplier:
    """Apply LFs to a DataFrame; ``apply(df)`` returns the (rows x LFs) int matrix, -1 = abstain."""

    def __init__(self, lfs: Sequence[LabelingFunction], cardinality: int = 2, n_jobs: int | None = None,
                 fault_tolerant: bool = False, id_column: str = "id"):
        names = [lf.name for lf in lfs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise LFError(f"LF names must be unique; {dupes} appear more than once. Rename them")
        if cardinality < 2:
            raise LFError(f"cardinality={cardinality} is invalid; use 2 or more classes")
        self.lfs = list(lfs)
        self.cardinality = cardinality
        self.n_jobs = max(1, n_jobs or default_jobs())
        self.fault_tolerant = fault_tolerant
        self.id_column = id_column
        self.errors: dict[str, int] = {}
        self.first_errors: dict[str, str] = {}  # LF -> "row <id>: <exception>" (fault-tolerant mode)

    def apply(self, df: "pd.DataFrame") -> "np.ndarray":
        import numpy as np

        self.errors, self.first_errors = {}, {}
        L = np.full((len(df), len(self.lfs)), ABSTAIN, dtype=np.int64)
        if len(df) == 0:
            return L
        cols = Columns(df)
        column_lfs = [j for j, lf in enumerate(self.lfs) if isinstance(lf, ColumnLF)]
        row_wise = [j for j in range(len(self.lfs)) if j not in column_lfs]
        if column_lfs:
            # pyarrow.compute releases the GIL: column LFs run in threads, one per core.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(self.n_jobs, len(column_lfs))) as pool:
                outcomes = list(pool.map(lambda j: _vectorized(self.lfs[j], cols), column_lfs))
            for j, labels in zip(column_lfs, outcomes):
                if labels is None:  # a missing text or an exception: the row form decides, row by row
                    row_wise.append(j)
                else:
                    L[:, j] = self._checked(labels, self.lfs[j], df)
        if row_wise:
            row_wise.sort()
            L[:, row_wise] = self._apply_rows(df, [self.lfs[j] for j in row_wise])
        return L

    # -- row-wise LFs ----------------------------------------------------------------

    def _apply_rows(self, df: "pd.DataFrame", lfs: list) -> "np.ndarray":
        import numpy as np

        n_jobs = min(self.n_jobs, max(1, len(df) // MIN_ROWS_PER_WORKER))
        bounds = np.linspace(0, len(df), n_jobs + 1, dtype=int)
        parts = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        if n_jobs == 1:
            results = [_label_rows(df, lfs, 0, len(df), self.fault_tolerant)]
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            global _SHARED
            _SHARED = (df, lfs, self.fault_tolerant)  # inherited by the forked workers, never pickled
            try:
                with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("fork")) as pool:
                    results = list(pool.map(_label_partition, parts))
            finally:
                _SHARED = None
        out = np.concatenate([r[0] for r in results])
        for _, errors, first, failure in results:
            if failure is not None:
                j, row, message = failure
                raise LFError(f"labeling function {lfs[j].name!r} raised on row {self._row_id(df, row)} "
                              f"(position {row}): {message}. Fix the LF, or pass fault_tolerant=True "
                              f"to make it abstain on errors")
            for name, count in errors.items():
                self.errors[name] = self.errors.get(name, 0) + count
            for name, (row, message) in first.items():
                self.first_errors.setdefault(name, f"row {self._row_id(df, row)}: {message}")
        for k, lf in enumerate(lfs):
            self._checked(out[:, k], lf, df)
        return out

    def _row_id(self, df, row: int):
        return repr(df[self.id_column].iloc[row]) if self.id_column in df.columns else f"#{row}"

    def _checked(self, labels: "np.ndarray", lf, df) -> "np.ndarray":
        import numpy as np

        if labels.shape != (len(df),):
            raise LFError(f"labeling function {lf.name!r} returned {labels.shape} labels for {len(df)} rows")
        bad = (labels < ABSTAIN) | (labels >= self.cardinality)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = "a non-integer value" if labels[row] == NOT_INT else repr(int(labels[row]))
            raise LFError(f"labeling function {lf.name!r} returned {value} on row {self._row_id(df, row)}; "
                          f"an LF returns -1 (abstain) or a class in 0..{self.cardinality - 1}")
        return labels


_SHARED = None


def _vectorized(lf: ColumnLF, cols: Columns):
    """The LF's column form, or None when it cannot run (the caller then runs its row form)."""
    import numpy as np

    try:
        return np.asarray(lf.vectorized(cols))
    except NullText:
        return None
    except Exception:  # the row form finds the failing row and names it, or abstains (fault tolerant)
        return None


def _label_partition(bounds: tuple[int, int]):
    df, lfs, tolerant = _SHARED
    return _label_rows(df, lfs, bounds[0], bounds[1], tolerant)


def _label_rows(df, lfs, start: int, stop: int, tolerant: bool):
    """Label rows [start, stop) with row-wise LFs; returns (labels, error counts, first errors, failure)."""
    import numpy as np

    part = df.iloc[start:stop]
    names = list(part.columns)
    columns = [part[c].tolist() for c in names]
    out = np.full((stop - start, len(lfs)), ABSTAIN, dtype=np.int64)
    errors: dict[str, int] = {}
    first: dict[str, tuple[int, str]] = {}
    for i, values in enumerate(zip(*columns)):
        x = Row(zip(names, values))
        for k, lf in enumerate(lfs):
            try:
                y = lf(x)
            except Exception as exc:
                message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                if not tolerant:
                    return out, errors, first, (k, start + i, message)
                errors[lf.name] = errors.get(lf.name, 0) + 1
                first.setdefault(lf.name, (start + i, message))
                continue
            out[i, k] = y if isinstance(y, (int, np.integer)) and ABSTAIN <= y < NOT_INT_LIMIT else NOT_INT
    return out, errors, first, None
