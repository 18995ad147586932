"""``mlsys bench stats``: our column statistics against the same statistics through GX metrics, in one run.

    mlsys bench stats [--data PATH] [--rows 1000000] [--repeat 2]

The input (default: the Chicago taxi data) is resampled with replacement to
``--rows`` rows and held in memory as one pandas DataFrame; both sides start
from that frame. GX 1.24 computes, through ``batch.compute_metrics``, what its
metric classes offer: row count, and per column the null count, the distinct
count, and min / max / mean / std for numbers. Ours computes all of that plus
quantiles, histograms, top values and string lengths (``statistics.compute``,
including the conversion to Arrow). Each side's time is the best of
``--repeat``; the shared statistics are checked to agree. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time

from mlsys.storage.table_file import read_table


def _gx_metrics(df):
    import contextlib
    import io

    import great_expectations as gx
    from great_expectations import metrics as m
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (context.data_sources.add_pandas("bench").add_dataframe_asset("data")
             .add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df}))
    metrics: list = [m.BatchRowCount()]
    plan = []
    for c in df.columns:
        metrics += [m.ColumnNullCount(column=c), m.ColumnDistinctValuesCount(column=c)]
        plan += [(c, "missing"), (c, "distinct")]
        if df[c].dtype.kind in "iuf":
            metrics.append(m.ColumnDescriptiveStats(column=c))
            plan.append((c, "describe"))
    with contextlib.redirect_stderr(io.StringIO()):  # Batch.compute_metrics always draws progress bars
        results = batch.compute_metrics(metrics)
    out: dict = {"rows": results[0].value}
    for (c, what), r in zip(plan, results[1:]):
        if not hasattr(r, "value"):
            raise RuntimeError(f"GX metric {what} on {c!r} failed: {r}")
        out[(c, what)] = r.value
    return out


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


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from mlsys.settings import settings
    from mlsys.validation import statistics

    parser = argparse.ArgumentParser(prog="mlsys bench stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(settings().data_dir / "chicago-taxi" / "data.csv"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rows < 2 or args.repeat < 1:
        parser.error("--rows must be >= 2 and --repeat >= 1")

    source = read_table(args.data).to_pandas()
    rng = np.random.default_rng(args.seed)
    df = source.iloc[rng.integers(0, len(source), args.rows)].reset_index(drop=True)
    df = df.astype({c: object for c in df.columns if str(df[c].dtype) in ("str", "string")})  # what GX can read
    print(f"data: {args.data} resampled to {len(df):,} rows x {df.shape[1]} columns")

    ours_times, gx_times = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        ours = statistics.compute(df)
        ours_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        gx = _gx_metrics(df)
        gx_times.append(time.perf_counter() - t)
        print(f"ours {ours_times[-1]:.3f} s   gx {gx_times[-1]:.3f} s")
    mismatches = _agree(ours, gx)
    for line in mismatches[:10]:
        print("MISMATCH", line)
    ours_s, gx_s = min(ours_times), min(gx_times)
    print(json.dumps({
        "rows": len(df), "columns": df.shape[1], "ours_s": round(ours_s, 4), "gx_s": round(gx_s, 4),
        "speedup": round(gx_s / ours_s, 2), "repeat": args.repeat, "agree": not mismatches,
        "gx_metrics": "row count, null count, distinct count, min/max/mean/std",
        "ours_extra": "quantiles, histograms, top values, string lengths",
    }))
    return 0 if not mismatches else 1
