"""``mlsys bench label``: FastLFApplier vs Snorkel's PandasLFApplier on the same rows, side by side, one run.

    mlsys bench label [--rows 100000] [--lfs mlsys.labeling.youtube_lfs] [--jobs N] [--repeat 3]

The input is ``--rows`` comments resampled (with replacement, fixed seed) from the
real YouTube corpus. Both appliers label all of it, in every repetition: ours with
``--jobs`` workers (column LFs in threads, row LFs in forked processes; default:
every core), ``PandasLFApplier`` on its one thread (it has no parallel mode;
Snorkel's ``DaskLFApplier`` needs dask, not installed). ``identical`` compares the
two label matrices. The headline, ``speedup_cpu``, compares rows per CPU-second
(threads and worker processes included), which a shared machine disturbs less
than the wall clock and which does not credit ours for using more cores;
``speedup`` is the wall-clock ratio. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from mlsys.bench.harness import add_repeat_argument, print_ratios, ratios, repeated, report, thread_counts

DEFAULT_ROWS = 100_000  # PandasLFApplier labels a few thousand rows per second here
TARGETS: dict[str, list] = {}


def corpus(rows: int, seed: int = 0):
    """``rows`` comments resampled from the YouTube corpus, with unique ids."""
    import numpy as np
    import pandas as pd

    from mlsys.errors import DataError
    from mlsys.settings import settings

    folder = settings().data_dir / "youtube-spam"
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise DataError(f"no YouTube CSVs under {folder}; set MLSYS_DATA_DIR")
    frames = [pd.read_csv(f, dtype=str).assign(group=f.stem) for f in files]
    real = pd.concat(frames, ignore_index=True).rename(
        columns={"COMMENT_ID": "id", "CONTENT": "text", "AUTHOR": "author", "DATE": "date"})
    real = real[["id", "group", "text", "author", "date"]].fillna("")
    pick = np.random.default_rng(seed).integers(0, len(real), rows)
    out = real.iloc[pick].reset_index(drop=True)
    out["id"] = out["id"] + "#" + pd.RangeIndex(rows).astype(str)
    return out


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _timed(fn):
    """(fn(), wall seconds, CPU seconds: this process's threads and the worker processes it waited for)."""
    wall, cpu = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - wall, _cpu() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys bench label", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"comments both appliers label (default {DEFAULT_ROWS:,})")
    parser.add_argument("--lfs", default="mlsys.labeling.youtube_lfs", help="LF module")
    parser.add_argument("--jobs", type=int, default=None, help="our worker processes/threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    add_repeat_argument(parser)
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows={args.rows}: use at least 1 row")

    import snorkel
    from snorkel.labeling import PandasLFApplier

    from mlsys.labeling.applier import FastLFApplier, default_jobs
    from mlsys.labeling.stage import load_lfs

    lfs = load_lfs(args.lfs)
    df = corpus(args.rows, args.seed)
    ours_applier, peer = FastLFApplier(lfs, n_jobs=args.jobs), PandasLFApplier(lfs)
    density = []

    def measure() -> dict:
        ours, ours_s, ours_cpu = _timed(lambda: ours_applier.apply(df))
        theirs, pandas_s, pandas_cpu = _timed(lambda: peer.apply(df, progress_bar=False))
        density.append(float((ours != -1).mean()))
        print(f"ours {ours_s:.3f} s ({ours_cpu:.3f} CPU s)   pandas {pandas_s:.3f} s ({pandas_cpu:.3f} CPU s)")
        return {"ours_s": ours_s, "ours_cpu_s": ours_cpu, "pandas_s": pandas_s, "pandas_cpu_s": pandas_cpu,
                "identical": bool(theirs.shape == ours.shape and (theirs == ours).all())}

    runs, loads = repeated(measure, args.repeat)
    for run, load in zip(runs, loads):
        run["load_average"] = load
    identical = all(r["identical"] for r in runs)
    figures = ratios(runs, {"speedup_cpu": lambda r: r["pandas_cpu_s"] / max(r["ours_cpu_s"], 1e-9),
                            "speedup": lambda r: r["pandas_s"] / r["ours_s"]})
    fields = report(figures, loads, TARGETS)
    print_ratios(fields)
    med = {k: statistics.median(r[k] for r in runs) for k in ("ours_s", "ours_cpu_s", "pandas_s", "pandas_cpu_s")}
    jobs = args.jobs or default_jobs()
    result = {
        "benchmark": "label", "rows": args.rows, "pandas_rows": args.rows, "lfs": args.lfs, "n_lfs": len(lfs),
        **fields, "speedup_cpu": fields["median"]["speedup_cpu"], "speedup": fields["median"]["speedup"],
        "identical": identical, "runs": runs,
        "ours_seconds": round(med["ours_s"], 3), "pandas_seconds": round(med["pandas_s"], 3),
        "ours_rows_per_s": round(args.rows / med["ours_s"], 1), "pandas_rows_per_s": round(args.rows / med["pandas_s"], 1),
        "ours_cpu_rows_per_s": round(args.rows / max(med["ours_cpu_s"], 1e-9), 1),
        "pandas_cpu_rows_per_s": round(args.rows / max(med["pandas_cpu_s"], 1e-9), 1),
        "label_density": round(statistics.median(density), 4),
        "jobs": jobs, "threads": {"ours": jobs, "pandas": 1, **thread_counts()},
        "peer": {"name": "snorkel.labeling.PandasLFApplier", "version": snorkel.__version__, "rows": args.rows,
                 "threads": 1, "progress_bar": False},
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0 if identical else 1
