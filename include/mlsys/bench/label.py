"""``mlsys bench label``: FastLFApplier vs Snorkel's PandasLFApplier, side by side, one run.

    mlsys bench label [--rows 1000000] [--pandas-rows N] [--lfs mlsys.labeling.youtube_lfs] [--jobs N]

The input is ``--rows`` comments resampled (with replacement, fixed seed) from the
real YouTube corpus. Ours labels all of it. ``PandasLFApplier`` labels the first
``--pandas-rows`` rows of the same input (default: all of them up to 100,000, since
it runs at a few thousand rows/s: pass ``--pandas-rows`` equal to ``--rows`` to run it on
everything); ``identical`` compares both label matrices on the rows both labeled.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time

DEFAULT_PANDAS_ROWS = 100_000


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys bench label", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="comments to label (default 1,000,000)")
    parser.add_argument("--pandas-rows", type=int, default=None,
                        help=f"rows PandasLFApplier labels (default min(rows, {DEFAULT_PANDAS_ROWS:,}))")
    parser.add_argument("--lfs", default="mlsys.labeling.youtube_lfs", help="LF module")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes/threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows={args.rows}: use at least 1 row")
    pandas_rows = min(args.rows, DEFAULT_PANDAS_ROWS if args.pandas_rows is None else args.pandas_rows)
    if pandas_rows < 1:
        parser.error(f"--pandas-rows={args.pandas_rows}: use at least 1 row")

    from snorkel.labeling import PandasLFApplier

    from mlsys.labeling.applier import FastLFApplier, default_jobs
    from mlsys.labeling.stage import load_lfs

    lfs = load_lfs(args.lfs)
    df = corpus(args.rows, args.seed)

    start, cpu = time.perf_counter(), _cpu()
    ours = FastLFApplier(lfs, n_jobs=args.jobs).apply(df)
    ours_s, ours_cpu = time.perf_counter() - start, _cpu() - cpu

    head = df.iloc[:pandas_rows]
    start, cpu = time.perf_counter(), _cpu()
    theirs = PandasLFApplier(lfs).apply(head, progress_bar=False)
    pandas_s, pandas_cpu = time.perf_counter() - start, _cpu() - cpu

    identical = bool(theirs.shape == ours[:pandas_rows].shape and (theirs == ours[:pandas_rows]).all())
    ours_rps = args.rows / ours_s
    pandas_rps = pandas_rows / pandas_s
    result = {
        "benchmark": "label",
        "rows": args.rows,
        "pandas_rows": pandas_rows,
        "lfs": args.lfs,
        "n_lfs": len(lfs),
        "pandas_seconds": round(pandas_s, 3),
        "ours_seconds": round(ours_s, 3),
        "pandas_rows_per_s": round(pandas_rps, 1),
        "ours_rows_per_s": round(ours_rps, 1),
        "speedup": round(ours_rps / pandas_rps, 2),
        "identical": identical,
        # CPU seconds (threads and worker processes included): on a shared machine, a check on the wall clock
        "pandas_cpu_rows_per_s": round(pandas_rows / max(pandas_cpu, 1e-9), 1),
        "ours_cpu_rows_per_s": round(args.rows / max(ours_cpu, 1e-9), 1),
        "label_density": round(float((ours != -1).mean()), 4),
        "jobs": args.jobs or default_jobs(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0 if identical else 1
