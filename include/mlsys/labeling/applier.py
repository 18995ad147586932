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

Scale-out (``make_applier(kind, ...)``, the label stage's ``applier``): Snorkel's own appliers on a cluster,
same matrix, same checks of the LFs' outputs:

    dask    DaskLFApplier on dask.distributed: the scheduler at $MLSYS_DASK_SCHEDULER (tcp://host:8786),
            else a LocalCluster of ``n_jobs`` worker processes started for the apply
    spark   SparkLFApplier on a Spark session: master $MLSYS_SPARK_MASTER (spark://host:7077),
            else local[n_jobs]; the rows go to Spark as an RDD of Rows

There, an LF that raises fails the apply with ``LFError`` carrying the worker's error (run ``fast`` to have
the row named); with ``fault_tolerant=True`` it abstains, and the per-LF counts stay with the workers
(``errors`` is empty).
"""

from __future__ import annotations

import os
import traceback
from typing import TYPE_CHECKING, Sequence

from snorkel.labeling import LabelingFunction

from mlsys.errors import MlsysError
from mlsys.labeling.lf import ABSTAIN, ColumnLF, Columns, NullText
from mlsys.settings import settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

APPLIERS = ("fast", "dask", "spark")
DASK_SCHEDULER_ENV, SPARK_MASTER_ENV = "MLSYS_DASK_SCHEDULER", "MLSYS_SPARK_MASTER"
PACKAGES = {"dask": "'dask[distributed]==2026.8.0'", "spark": "'pyspark==4.3.0' and Java 17"}
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


# -- scale-out: Snorkel's Dask and Spark appliers, behind the same interface -------------------------------


class _Remote(FastLFApplier):
    """A Snorkel applier on a cluster: the same checks of names, classes and outputs as ``FastLFApplier``."""

    kind = ""

    def apply(self, df: "pd.DataFrame") -> "np.ndarray":
        import numpy as np

        self.errors, self.first_errors = {}, {}
        if len(df) == 0:
            return np.full((0, len(self.lfs)), ABSTAIN, dtype=np.int64)
        try:
            L = np.asarray(self._apply(df), dtype=np.int64)
        except ImportError as exc:
            raise LFError(f"applier={self.kind!r} needs {exc.name or 'its client library'}: install "
                          f"{PACKAGES[self.kind]} where the label task runs (requirements-dev.txt pins it)") from exc
        except LFError:
            raise
        except Exception as exc:  # a worker's error: kept as the cause, named here
            raise LFError(f"the {self.kind} applier failed: {_worker_error(exc)}. Fix the LF, pass "
                          f"fault_tolerant=True to make it abstain on errors, or run applier='fast' to have the "
                          f"LF and the row named") from exc
        for j, lf in enumerate(self.lfs):
            self._checked(L[:, j], lf, df)
        return L


def _worker_error(exc: Exception) -> str:
    """The LF's own exception: Dask re-raises it as it was; Spark wraps the worker's traceback in its message."""
    import re

    lines = [ln.strip() for ln in str(exc).splitlines()]
    raised = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", ln)]
    return raised[-1] if len(lines) > 1 and raised else f"{type(exc).__name__}: {str(exc)[:500]}"


class DaskApplier(_Remote):
    """Snorkel's ``DaskLFApplier`` on a dask.distributed cluster (``address``, else a LocalCluster)."""

    kind = "dask"

    def __init__(self, lfs: Sequence[LabelingFunction], address: str | None = None, **kwargs):
        super().__init__(lfs, **kwargs)
        self.address = address if address is not None else settings().dask_scheduler

    def _apply(self, df: "pd.DataFrame") -> "np.ndarray":
        import dask.dataframe as dd
        from dask.distributed import Client, LocalCluster
        from snorkel.labeling.apply.dask import DaskLFApplier

        if self.address:
            with Client(self.address) as client:
                return self._run(DaskLFApplier(self.lfs), dd, df, client)
        with LocalCluster(n_workers=self.n_jobs, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
                Client(cl) as client:
            return self._run(DaskLFApplier(self.lfs), dd, df, client)

    def _run(self, applier, dd, df, client) -> "np.ndarray":
        """``DaskLFApplier.apply``, with the output's type given to Dask (``meta``): Snorkel 0.10 leaves Dask to
        infer it by running the LFs on a made-up row (missing or placeholder values), where a text LF raises."""
        from functools import partial

        from snorkel.labeling.apply.core import _FunctionCaller
        from snorkel.labeling.apply.pandas import apply_lfs_to_data_point, rows_to_triplets

        workers = max(1, len(client.scheduler_info().get("workers", {})))
        frame = dd.from_pandas(df.reset_index(drop=True), npartitions=min(len(df), 4 * workers))
        label = partial(apply_lfs_to_data_point, lfs=self.lfs, f_caller=_FunctionCaller(self.fault_tolerant))
        labels = frame.map_partitions(lambda part: part.apply(label, axis=1), meta=(None, "object"))
        return applier._numpy_from_row_data(rows_to_triplets(labels.compute(scheduler=client)))


class SparkApplier(_Remote):
    """Snorkel's ``SparkLFApplier`` on a Spark session (``master``, else local[n_jobs])."""

    kind = "spark"

    def __init__(self, lfs: Sequence[LabelingFunction], master: str | None = None, **kwargs):
        super().__init__(lfs, **kwargs)
        self.master = master if master is not None else settings().spark_master

    def session(self):
        """The process's Spark session (started once; its workers run this interpreter)."""
        import sys

        from pyspark.sql import SparkSession

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        return (SparkSession.builder.master(self.master or f"local[{self.n_jobs}]").appName("mlsys-label")
                .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                .config("spark.driver.memory", "2g").getOrCreate())

    def _apply(self, df: "pd.DataFrame") -> "np.ndarray":
        from pyspark.sql import Row as SparkRow
        from snorkel.labeling.apply.spark import SparkLFApplier

        sc = self.session().sparkContext
        names = [str(c) for c in df.columns]
        rows = [SparkRow(**dict(zip(names, values))) for values in zip(*(df[c].tolist() for c in df.columns))]
        rdd = sc.parallelize(rows, numSlices=max(1, min(len(rows), 4 * sc.defaultParallelism)))
        return SparkLFApplier(self.lfs).apply(rdd, fault_tolerant=self.fault_tolerant)


KINDS = {"fast": FastLFApplier, "dask": DaskApplier, "spark": SparkApplier}


def make_applier(kind: str, lfs: Sequence[LabelingFunction], **kwargs) -> FastLFApplier:
    """The applier named ``kind`` (one of ``APPLIERS``); keyword arguments as ``FastLFApplier``'s."""
    if kind not in KINDS:
        raise LFError(f"applier={kind!r} is invalid; use one of {list(APPLIERS)}")
    return KINDS[kind](lfs, **kwargs)
