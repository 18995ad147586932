"""``mlsys bench batch``: our batch scoring vs ``mlflow.pyfunc`` predict vs the compute floor.

    mlsys bench batch --rows 1000000,10000000

For each size it writes a synthetic dataset (see workload.py) and measures,
each in its own subprocess (so peak RSS is that of one job):

- ours:   ``mlsys.serving.batch.stage.run``: Parquet read (prefetched) -> score -> Parquet write;
- pyfunc: ``mlflow.pyfunc.load_model(uri).predict(df)`` on the whole DataFrame, already in memory;
- floor:  featurisation + forward pass on in-memory chunks on all cores, no I/O at all.

Model loading is excluded from every rate. ``--no-isolate`` measures in one
process instead (a quick check: its peak RSS figures are then not per job). The last line is one JSON object;
lists are aligned with ``rows``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

MODEL = "mlsys-bench-batch"


def _rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork + exec, so a
    child would report at least its parent's peak (here the parent that generated the data)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, dataset: str, batch_rows: int, workers: int) -> dict:
    from mlsys.serving import champion
    from mlsys.storage import DatasetStore
    from mlsys.tracking import tracker

    tracker.configure()
    store = DatasetStore()
    if mode == "ours":
        from mlsys.serving.batch.stage import BatchSpec, run

        result = run(BatchSpec(dataset=dataset, model_name=MODEL, model_version="1", batch_rows=batch_rows, workers=workers))
        rows, rate = result.rows, result.rows_per_s
    elif mode == "floor":
        import torch

        from mlsys.serving.batch.chunks import (
            MICRO_ROWS,
            default_workers,
            ordered_map,
            utf8_buffers,
        )

        scorer = champion.load(champion.resolve(MODEL, "1"))
        if (workers or default_workers()) > 1:
            torch.set_num_threads(1)  # as batch.run does: parallel across chunks
        table = store.read_table(dataset, columns=["text"])
        step = min(batch_rows, MICRO_ROWS)  # the same micro-batches ours computes
        chunks = [utf8_buffers(table.column("text").slice(i, step)) for i in range(0, table.num_rows, step)]
        started = time.perf_counter()
        rows = sum(len(s) for s in ordered_map(lambda c: scorer.score_utf8(*c), chunks, workers or default_workers()))
        rate = rows / (time.perf_counter() - started)
    elif mode == "pyfunc":
        import mlflow

        model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
        df = store.read(dataset, columns=["text"])
        started = time.perf_counter()
        rows = len(model.predict(df))
        rate = rows / (time.perf_counter() - started)
    else:
        raise ValueError(f"unknown mode {mode!r}: use ours, floor or pyfunc")
    return {"mode": mode, "rows": rows, "rows_per_s": rate, "peak_rss_mb": _rss_mb()}


def _measure(mode: str, dataset: str, args) -> dict:
    if not args.isolate:
        return _child(mode, dataset, args.batch_rows, args.workers)
    cmd = [sys.executable, "-m", "mlsys.bench.batch", "--child", mode, "--dataset", dataset,
           "--batch-rows", str(args.batch_rows), "--workers", str(args.workers)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child {mode} on {dataset} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mlsys bench batch", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1000000,10000000", help="comma-separated dataset sizes, measured in one run")
    p.add_argument("--pyfunc-max-rows", type=int, default=1_000_000,
                   help="measure pyfunc only up to this size (it holds the whole DataFrame and featurises in Python)")
    p.add_argument("--batch-rows", type=int, default=65536)
    p.add_argument("--workers", type=int, default=0, help="scoring threads; 0 = one per core")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="measure in this process (quick check; peak RSS is then this process's, not each job's)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--dataset", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.dataset, args.batch_rows, args.workers)))
        return 0

    sizes = [int(r) for r in args.rows.split(",")]
    with tempfile.TemporaryDirectory(prefix="mlsys-bench-batch-") as home:
        from mlsys.settings import use_embedded_home

        use_embedded_home(home)
        from mlsys.bench.workload import register_model, text_chunks
        from mlsys.storage import DatasetStore

        register_model(MODEL)
        store = DatasetStore()
        out: dict = {"rows": sizes, "ours_rows_per_s": [], "floor_rows_per_s": [], "pyfunc_rows_per_s": [],
                     "ours_peak_rss_mb": [], "floor_peak_rss_mb": [], "pyfunc_peak_rss_mb": [],
                     "speedup_vs_pyfunc": [], "fraction_of_floor": [], "cores": os.cpu_count(),
                     "load_avg_1m": os.getloadavg()[0]}
        for n in sizes:
            name = f"bench_{n}"
            store.write(name, text_chunks(n))
            ours, floor = _measure("ours", name, args), _measure("floor", name, args)
            pyfunc = _measure("pyfunc", name, args) if n <= args.pyfunc_max_rows else None
            out["ours_rows_per_s"].append(round(ours["rows_per_s"]))
            out["floor_rows_per_s"].append(round(floor["rows_per_s"]))
            out["ours_peak_rss_mb"].append(round(ours["peak_rss_mb"], 1))
            out["floor_peak_rss_mb"].append(round(floor["peak_rss_mb"], 1))
            out["pyfunc_rows_per_s"].append(round(pyfunc["rows_per_s"]) if pyfunc else None)
            out["pyfunc_peak_rss_mb"].append(round(pyfunc["peak_rss_mb"], 1) if pyfunc else None)
            out["fraction_of_floor"].append(round(ours["rows_per_s"] / floor["rows_per_s"], 3))
            out["speedup_vs_pyfunc"].append(round(ours["rows_per_s"] / pyfunc["rows_per_s"], 2) if pyfunc else None)
            print(f"{n:>12,} rows  ours {ours['rows_per_s']:>10,.0f}/s ({ours['peak_rss_mb']:,.0f} MB)  "
                  f"floor {floor['rows_per_s']:>10,.0f}/s  "
                  + (f"pyfunc {pyfunc['rows_per_s']:>10,.0f}/s ({pyfunc['peak_rss_mb']:,.0f} MB)" if pyfunc else
                     f"pyfunc not run above {args.pyfunc_max_rows:,} rows"), file=sys.stderr)
            for version in store.versions(name):
                store.backend.local_path(f"datasets/{name}/{version.version}/data.parquet").unlink()
        out["rss_ratio_largest_vs_smallest"] = round(out["ours_peak_rss_mb"][-1] / out["ours_peak_rss_mb"][0], 3)
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
