"""``mlsys bench stats``: our column statistics against the same statistics through GX metrics, in one run.

    mlsys bench stats [--data PATH] [--rows 1000000] [--repeat 3] [--threads N] [--strings native|object]

The input (default: the Chicago taxi data) is resampled with replacement to
``--rows`` rows and held in memory as one pandas DataFrame, its string columns
as pandas reads them (``--strings object``: Python objects, as in pandas < 3);
both sides start from that frame. GX 1.24 computes, through ``batch.compute_metrics``, what its
metric classes offer: row count, and per column the null count, the distinct
count, and min / max / mean / std for numbers. Ours computes all of that plus
quantiles, histograms, top values and string lengths (``statistics.compute``,
including the conversion to Arrow).

GX's set-up (ephemeral context, pandas data source, dataframe asset, batch
definition, batch) is done once and timed apart (``gx_setup_s``): each
repetition times only ``batch.compute_metrics`` on that prepared batch, as a
user who keeps the batch would run it. Per repetition, three timings on the
same frame: ours on one thread (one column at a time, pyarrow's pool and
BLAS limited to 1), GX under the same limits, and ours on ``--threads``
column threads (default: every core). GX's pandas engine has no threads to
give it. ``speedup_1t`` (GX / ours, one thread each) is the headline;
``speedup_1t_cpu`` (the same by CPU seconds, which a shared machine disturbs
less), ``speedup`` (GX / ours on every core) and ``threads_gain`` are reported
beside it; the top-level ``*_s`` are the medians of the timings.
The shared statistics are checked to agree. The last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import time
from statistics import median as statistics_median

from mlsys.bench.harness import add_repeat_argument, print_ratios, ratios, repeated, report, thread_counts
from mlsys.storage.table_file import read_table

TARGETS = {"speedup_1t": [">=", 10.0]}
GX_METRICS = "row count, null count, distinct count, min/max/mean/std"


class GXMetrics:
    """GX's side: the set-up once (``setup_s``), then ``compute()`` of the metrics on the prepared batch."""

    def __init__(self, df):
        import great_expectations as gx
        from great_expectations import metrics as m
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        start = time.perf_counter()
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.batch = (context.data_sources.add_pandas("bench").add_dataframe_asset("data")
                      .add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df}))
        self.metrics: list = [m.BatchRowCount()]
        self.plan: list[tuple[str, str]] = []
        for c in df.columns:
            self.metrics += [m.ColumnNullCount(column=c), m.ColumnDistinctValuesCount(column=c)]
            self.plan += [(c, "missing"), (c, "distinct")]
            if df[c].dtype.kind in "iuf":
                self.metrics.append(m.ColumnDescriptiveStats(column=c))
                self.plan.append((c, "describe"))
        self.setup_s = time.perf_counter() - start
        self.version = gx.__version__

    def compute(self) -> dict:
        with contextlib.redirect_stderr(io.StringIO()):  # Batch.compute_metrics always draws progress bars
            results = self.batch.compute_metrics(self.metrics)
        out: dict = {"rows": results[0].value}
        for (c, what), r in zip(self.plan, results[1:]):
            if not hasattr(r, "value"):
                raise RuntimeError(f"GX metric {what} on {c!r} failed: {r}")
            out[(c, what)] = r.value
        return out


def _gx_metrics(df) -> dict:
    """GX's statistics of ``df``, set-up included (one-off use)."""
    return GXMetrics(df).compute()


def _agree(ours, gx) -> list[str]:
    bad = []
    if ours.rows != gx["rows"]:
        bad.append(f"rows {ours.rows} != {gx['rows']}")
    for key, value in gx.items():
        if key == "rows":
            continue
        c, what = key
        col = ours.columns[c]
        if what == "missing" and col.missing != value:
            bad.append(f"{c} missing {col.missing} != {value}")
        elif what == "distinct" and col.distinct is not None and col.distinct != value:
            bad.append(f"{c} distinct {col.distinct} != {value}")
        elif what == "describe" and col.count == 0:
            continue  # an all-missing column has no min, max, mean or std on either side
        elif what == "describe":
            n = col.count
            std_sample = col.std * math.sqrt(n / (n - 1)) if n > 1 else col.std  # GX reports the sample std
            for name, a, b in (("min", col.min, value.min), ("max", col.max, value.max), ("mean", col.mean, value.mean),
                               ("std", std_sample, value.standard_deviation)):
                if name == "std" and n < 2:
                    continue  # the sample std of one value is undefined (GX: NaN)
                if not math.isclose(a, float(b), rel_tol=1e-6, abs_tol=1e-9):
                    bad.append(f"{c} {name} {a} != {b}")
    return bad


@contextlib.contextmanager
def one_thread():
    """pyarrow's CPU pool and every BLAS / OpenMP pool limited to 1 thread, restored on exit."""
    import pyarrow as pa
    from threadpoolctl import threadpool_limits

    before = pa.cpu_count()
    pa.set_cpu_count(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        pa.set_cpu_count(before)


def _timed(fn) -> tuple[object, float, float]:
    """(fn(), wall seconds, CPU seconds of the whole process: every thread's)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def sample(path: str, rows: int, seed: int, strings: str = "native"):
    """``rows`` rows of the file at ``path``, resampled with replacement. ``strings``: ``native`` keeps the
    string dtype pandas reads (pandas 3: Arrow-backed ``str``), ``object`` makes them Python objects."""
    import numpy as np

    source = read_table(path).to_pandas()
    df = source.iloc[np.random.default_rng(seed).integers(0, len(source), rows)].reset_index(drop=True)
    if strings == "object":
        df = df.astype({c: object for c in df.columns if str(df[c].dtype) in ("str", "string")})
    return df


def main(argv: list[str] | None = None) -> int:
    import os

    from mlsys.settings import settings
    from mlsys.validation import statistics

    parser = argparse.ArgumentParser(prog="mlsys bench stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(settings().data_dir / "chicago-taxi" / "data.csv"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=0, help="our column threads in the multi-thread run (0: every core)")
    parser.add_argument("--strings", choices=("native", "object"), default="native",
                        help="string columns as pandas reads them (native) or as Python objects (object)")
    parser.add_argument("--seed", type=int, default=0)
    add_repeat_argument(parser)
    args = parser.parse_args(argv)
    if args.rows < 2 or args.repeat < 1 or args.threads < 0:
        parser.error(f"--rows={args.rows} must be >= 2, --repeat={args.repeat} >= 1 and --threads={args.threads} >= 0")
    threads = args.threads or os.cpu_count() or 1

    df = sample(args.data, args.rows, args.seed, args.strings)
    print(f"data: {args.data} resampled to {len(df):,} rows x {df.shape[1]} columns, {args.strings} strings")
    peer = GXMetrics(df)
    with one_thread():  # the first call of each side imports and warms what it needs: untimed
        statistics.compute(df.head(1000), workers=1)
        peer.compute()

    def measure() -> dict:
        with one_thread():
            ours_1t, ours_1t_s, ours_1t_cpu = _timed(lambda: statistics.compute(df, workers=1))
            gx, gx_s, gx_cpu = _timed(peer.compute)
        ours, ours_s, ours_cpu = _timed(lambda: statistics.compute(df, workers=threads))
        print(f"ours 1 thread {ours_1t_s:.3f} s   gx 1 thread {gx_s:.3f} s   ours {threads} threads {ours_s:.3f} s")
        return {"ours_1t_s": ours_1t_s, "gx_s": gx_s, "ours_s": ours_s, "ours_1t_cpu_s": ours_1t_cpu,
                "gx_cpu_s": gx_cpu, "ours_cpu_s": ours_cpu,
                "mismatches": _agree(ours_1t, gx) + _agree(ours, gx)}

    runs, loads = repeated(measure, args.repeat)
    mismatches = sorted({m for r in runs for m in r.pop("mismatches")})
    for line in mismatches[:10]:
        print("MISMATCH", line)
    for run, load in zip(runs, loads):
        run["load_average"] = load
    figures = ratios(runs, {"speedup_1t": lambda r: r["gx_s"] / r["ours_1t_s"],
                            "speedup_1t_cpu": lambda r: r["gx_cpu_s"] / r["ours_1t_cpu_s"],
                            "speedup": lambda r: r["gx_s"] / r["ours_s"],
                            "threads_gain": lambda r: r["ours_1t_s"] / r["ours_s"]})
    fields = report(figures, loads, TARGETS)
    print_ratios(fields)
    print(json.dumps({
        "benchmark": "stats", "rows": len(df), "columns": df.shape[1], "strings": args.strings, **fields,
        "speedup_1t": fields["median"]["speedup_1t"], "speedup": fields["median"]["speedup"],
        **{k: round(statistics_median([r[k] for r in runs]), 4) for k in ("ours_1t_s", "gx_s", "ours_s")},
        "gx_setup_s": round(peer.setup_s, 4), "runs": runs, "agree": not mismatches,
        "threads": {"ours_1t": 1, "gx": 1, "ours": threads, **thread_counts()},
        "peer": {"name": "great_expectations", "version": peer.version, "engine": "pandas",
                 "api": "Batch.compute_metrics on a prepared batch (set-up timed apart: gx_setup_s)",
                 "metrics": GX_METRICS, "threads": 1},
        "ours_extra": "quantiles, histograms, top values, string lengths",
    }))
    return 0 if not mismatches else 1
