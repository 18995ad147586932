"""``mlsys bench label_scale``: our LF applier vs Snorkel's Dask and Spark appliers on many rows, one run.

    mlsys bench label_scale [--rows 1000000] [--workers 2] [--appliers fast,dask,spark]

The rows are ``--rows`` comments resampled from the real YouTube corpus (``bench label``'s ``corpus``), the
LFs ``mlsys.labeling.youtube_lfs``. Each applier labels all of them with ``--workers`` processes: ours
(``fast``: column LFs vectorised, row LFs in forked processes), Snorkel's ``DaskLFApplier`` on a
``dask.distributed`` LocalCluster of ``--workers`` single-threaded worker processes, and Snorkel's
``SparkLFApplier`` on a local Spark session (``local[workers]``). A cluster or session is started before its
clock starts (``startup_s`` says how long it took); the clock covers moving the rows to it and labeling them.
``identical`` compares every matrix with ours (ours equals ``PandasLFApplier``'s: ``bench label``). The
last line is one JSON object with ``rows_per_s`` per applier.
"""

from __future__ import annotations

import argparse
import json
import time


def _cluster(kind: str, workers: int):
    """(applier options, a closer) for ``kind``, its cluster started."""
    if kind == "dask":
        from dask.distributed import LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        return {"address": cluster.scheduler_address}, cluster.close
    if kind == "spark":
        from mlsys.labeling.applier import SparkApplier

        session = SparkApplier([], master=f"local[{workers}]").session()
        session.sparkContext.parallelize(range(workers), workers).count()  # the Python workers are up
        return {"master": f"local[{workers}]"}, session.stop
    return {}, lambda: None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys bench label_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--appliers", default="fast,dask,spark")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.appliers.split(",") if k.strip()]

    import numpy as np

    from mlsys.bench.label import corpus
    from mlsys.labeling import youtube_lfs
    from mlsys.labeling.applier import APPLIERS, make_applier

    bad = [k for k in kinds if k not in APPLIERS]
    if bad or "fast" not in kinds:
        parser.error(f"--appliers={args.appliers!r}: use some of {list(APPLIERS)}, 'fast' included (the reference)")
    df = corpus(args.rows, args.seed)
    results, reference = {}, None
    for kind in ["fast"] + [k for k in kinds if k != "fast"]:
        t0 = time.perf_counter()
        options, close = _cluster(kind, args.workers)
        startup = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            L = make_applier(kind, youtube_lfs.lfs, n_jobs=args.workers, **options).apply(df)
            seconds = time.perf_counter() - t0
        finally:
            close()
        reference = L if reference is None else reference
        results[kind] = {"seconds": round(seconds, 3), "rows_per_s": round(args.rows / seconds, 1),
                         "startup_s": round(startup, 2), "identical": bool(np.array_equal(L, reference))}
        print(f"{kind:<6} {seconds:8.2f} s  {args.rows / seconds:12,.0f} rows/s  (start-up {startup:.1f} s)",
              flush=True)
    print(json.dumps({"benchmark": "label_scale", "rows": args.rows, "workers": args.workers, "appliers": results,
                      "identical": all(r["identical"] for r in results.values())}))
    return 0 if all(r["identical"] for r in results.values()) else 1
