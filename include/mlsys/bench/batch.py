"""``mlsys bench batch``: our batch scoring vs ``mlflow.pyfunc`` predict vs the compute floor, same threads.

    mlsys bench batch --rows 1000000,10000000 --threads 1,2 --repeat 3

For each size it writes a synthetic dataset (see workload.py) and, each repetition and
each thread count T, measures, each in its own subprocess (so peak RSS is that of one job,
and OMP_NUM_THREADS=T is what torch starts with):

- ours:   ``mlsys.serving.batch.stage.run`` with T workers: Parquet read (prefetched) -> score -> Parquet write;
- pyfunc: ``mlflow.pyfunc.load_model(uri).predict(df)`` with torch on T threads, on the whole DataFrame,
          already in memory; the logged pyfunc featurises with the same VectorFeaturizer as ours;
- floor:  featurisation + forward pass on in-memory chunks on T threads, no I/O at all.

Arrow's CPU pool is set to T threads in every job. Model loading and reading the
pyfunc's DataFrame are excluded from every rate. Each job saves its predictions;
the three must agree (``same_predictions``: every class equal, probabilities within
1e-5). ``--no-isolate`` measures in one process instead (a quick check: its peak RSS
figures are then not per job). The last line is one JSON object: ``median`` / ``range``
of every ratio (speedup over pyfunc, share of the floor) per size and thread count,
``runs`` (every measurement), the peer's configuration and the thread counts each job saw.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlsys.bench.harness import add_repeat_argument, print_ratios, ratios, repeated, report, thread_counts

MODEL = "mlsys-bench-batch"
MODES = ("ours", "floor", "pyfunc")
SAMPLE = 20  # rows of each job's predictions carried in the JSON, for a reader (or test) to compare
TARGETS = {"speedup_vs_pyfunc": [">=", 3.0], "speedup_vs_best_pyfunc": [">=", 3.0], "fraction_of_floor": [">=", 0.9]}


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


def _child(mode: str, dataset: str, batch_rows: int, threads: int, out: str) -> dict:
    import numpy as np
    import pyarrow as pa
    import torch

    from mlsys.serving import champion
    from mlsys.storage import DatasetStore
    from mlsys.tracking import tracker

    tracker.configure()
    store = DatasetStore()
    pa.set_cpu_count(threads)
    torch.set_num_threads(threads)
    if mode == "ours":
        from mlsys.serving.batch.stage import BatchSpec, run

        result = run(BatchSpec(dataset=dataset, model_name=MODEL, model_version="1", batch_rows=batch_rows,
                               workers=threads))
        rows, rate = result.rows, result.rows_per_s
        table = store.read_table(result.predictions.name, result.predictions.version, columns=["prediction", "proba_1"])
        prediction, proba_1 = table.column("prediction").to_numpy(), table.column("proba_1").to_numpy()
    elif mode == "floor":
        from mlsys.serving.batch.chunks import MICRO_ROWS, ordered_map, utf8_buffers

        scorer = champion.load(champion.resolve(MODEL, "1"))
        if threads > 1:
            torch.set_num_threads(1)  # as batch.run does: parallel across chunks
        table = store.read_table(dataset, columns=["text"])
        step = min(batch_rows, MICRO_ROWS)  # the same micro-batches ours computes
        chunks = [utf8_buffers(table.column("text").slice(i, step)) for i in range(0, table.num_rows, step)]
        started = time.perf_counter()
        scores = list(ordered_map(lambda c: scorer.score_utf8(*c), chunks, threads))
        rate = sum(len(s) for s in scores) / (time.perf_counter() - started)
        prediction = np.concatenate([s.prediction for s in scores])
        proba_1 = np.concatenate([s.proba[:, 1] for s in scores])
        rows = len(prediction)
    elif mode == "pyfunc":
        import mlflow

        model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
        df = store.read(dataset, columns=["text"])
        started = time.perf_counter()
        predicted = model.predict(df)
        rate = len(predicted) / (time.perf_counter() - started)
        rows, prediction, proba_1 = len(predicted), predicted["prediction"].to_numpy(), predicted["proba_1"].to_numpy()
    else:
        raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
    np.savez(out, prediction=prediction.astype(np.int8), proba_1=proba_1.astype(np.float32))
    parallel = mode != "pyfunc" and threads > 1  # ours and the floor: T chunks at once, one torch thread each
    return {"mode": mode, "rows": rows, "threads": threads, "rows_per_s": rate, "peak_rss_mb": _rss_mb(),
            "scoring": {"workers": threads if parallel else 1, "torch_threads_each": 1 if parallel else threads},
            "thread_counts": thread_counts()}


def _measure(mode: str, dataset: str, threads: int, out: Path, args) -> dict:
    if not args.isolate:
        import pyarrow as pa
        import torch

        before = torch.get_num_threads(), pa.cpu_count()
        try:
            return _child(mode, dataset, args.batch_rows, threads, str(out))
        finally:
            torch.set_num_threads(before[0])
            pa.set_cpu_count(before[1])
    cmd = [sys.executable, "-m", "mlsys.bench.batch", "--child", mode, "--dataset", dataset,
           "--batch-rows", str(args.batch_rows), "--child-threads", str(threads), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {mode} on {dataset} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(outputs: dict[str, Path]) -> dict:
    """Every job's predictions against ours: class mismatches, the largest probability difference, a sample."""
    import numpy as np

    loaded = {mode: np.load(path) for mode, path in outputs.items()}
    ours = loaded["ours"]
    out = {"sample": {m: {"prediction": d["prediction"][:SAMPLE].tolist(),
                          "proba_1": [round(float(x), 7) for x in d["proba_1"][:SAMPLE]]} for m, d in loaded.items()}}
    for mode, data in loaded.items():
        if mode != "ours":
            same_rows = len(data["prediction"]) == len(ours["prediction"])
            out[f"{mode}_rows_equal"] = same_rows
            out[f"{mode}_class_mismatches"] = int((data["prediction"] != ours["prediction"]).sum()) if same_rows else -1
            out[f"{mode}_max_proba_diff"] = float(np.abs(data["proba_1"] - ours["proba_1"]).max()) if same_rows else 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mlsys bench batch", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1000000", help="comma-separated dataset sizes, measured in one run "
                                                     "(e.g. 1000000,10000000)")
    p.add_argument("--pyfunc-max-rows", type=int, default=10_000_000,
                   help="measure pyfunc only up to this size (it holds the whole DataFrame in memory)")
    p.add_argument("--batch-rows", type=int, default=65536)
    p.add_argument("--threads", default="1,2", help="thread counts, each given to all three jobs")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="measure in this process (quick check; peak RSS is then this process's, not each job's)")
    add_repeat_argument(p)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--dataset", help=argparse.SUPPRESS)
    p.add_argument("--child-threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.dataset, args.batch_rows, args.child_threads, args.out)))
        return 0

    sizes, threads = [int(r) for r in args.rows.split(",")], [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory(prefix="mlsys-bench-batch-") as home:
        from mlsys.settings import use_embedded_home

        use_embedded_home(home)
        from mlsys.bench.workload import register_model, text_chunks
        from mlsys.storage import DatasetStore

        register_model(MODEL)
        store = DatasetStore()
        for n in sizes:
            store.write(f"bench_{n}", text_chunks(n))

        def measure() -> dict:
            rows, checks = [], []
            for n in sizes:
                for t in threads:
                    outputs = {}
                    for mode in MODES:
                        if mode == "pyfunc" and n > args.pyfunc_max_rows:
                            continue
                        outputs[mode] = Path(home) / f"{mode}-{n}-{t}.npz"
                        row = {"size": n, **_measure(mode, f"bench_{n}", t, outputs[mode], args)}
                        rows.append(row)
                        print(f"{n:>12,} rows  t={t}  {mode:>6} {row['rows_per_s']:>10,.0f} rows/s  "
                              f"peak RSS {row['peak_rss_mb']:,.0f} MB", file=sys.stderr)
                    checks.append({"size": n, "threads": t, **compare(outputs)})
                    for path in outputs.values():
                        path.unlink()
            return {"results": rows, "checks": checks}

        runs, loads = repeated(measure, args.repeat)
        for run, load_avg in zip(runs, loads):
            run["load_average"] = load_avg
        figures = ratios(runs, _formulas(sizes, threads))
        targets = {name: TARGETS[key] for name in figures for key in TARGETS if name.startswith(key)}
        fields = report(figures, loads, targets)
        print_ratios(fields)
        checks = [c for run in runs for c in run["checks"]]
        out = {"benchmark": "batch", **fields, "rows": sizes, "threads": threads, "runs": runs,
               "same_predictions": all(c[f"{m}_rows_equal"] and c[f"{m}_class_mismatches"] == 0
                                       and c[f"{m}_max_proba_diff"] <= 1e-5
                                       for c in checks for m in ("floor", "pyfunc") if f"{m}_rows_equal" in c),
               "rss_ratio_largest_vs_smallest": _rss_ratio(runs, sizes),
               "cores": os.cpu_count(), "thread_counts": thread_counts(),
               "peer": {"pyfunc": {"call": "mlflow.pyfunc.load_model('models:/NAME/1').predict(df)",
                                   "featurizer": "VectorFeaturizer (the logged pyfunc's fast path)",
                                   "threads": "torch.set_num_threads(T), OMP_NUM_THREADS=T, pyarrow.set_cpu_count(T)",
                                   "input": "a pandas DataFrame already in memory (read before the timer)",
                                   "max_rows": args.pyfunc_max_rows},
                        "floor": {"threads": "T scoring threads over in-memory micro-batches, no I/O"},
                        "ours": {"threads": "BatchSpec.workers=T", "batch_rows": args.batch_rows}}}
        print(json.dumps(out))
    return 0


def _rate(run: dict, mode: str, n: int, t: int) -> float | None:
    row = next((r for r in run["results"] if (r["mode"], r["size"], r["threads"]) == (mode, n, t)), None)
    return row["rows_per_s"] if row else None


def _formulas(sizes: list[int], threads: list[int]) -> dict:
    """Each ratio from the timed fields of one run: rows/s of ours over the peer's."""

    def ratio(n: int, t: int, peer: str):
        def formula(run):
            ours, theirs = _rate(run, "ours", n, t), _rate(run, peer, n, t)
            return ours / theirs if ours is not None and theirs else None
        return formula

    def best(n: int):
        """Each side at its own best thread count: the peer as fast as a user could make it."""
        def formula(run):
            ours = [r for t in threads if (r := _rate(run, "ours", n, t)) is not None]
            theirs = [r for t in threads if (r := _rate(run, "pyfunc", n, t)) is not None]
            return max(ours) / max(theirs) if ours and theirs else None
        return formula

    out = {}
    for n in sizes:
        for t in threads:
            out[f"speedup_vs_pyfunc_{n}_t{t}"] = ratio(n, t, "pyfunc")
            out[f"fraction_of_floor_{n}_t{t}"] = ratio(n, t, "floor")
        out[f"speedup_vs_best_pyfunc_{n}"] = best(n)
    return out


def _rss_ratio(runs: list[dict], sizes: list[int]) -> float | None:
    """Our peak RSS at the largest size over the smallest (flat memory: about 1)."""
    peak = {n: max(r["peak_rss_mb"] for run in runs for r in run["results"] if r["mode"] == "ours" and r["size"] == n)
            for n in sizes}
    return round(peak[sizes[-1]] / peak[sizes[0]], 3) if len(sizes) > 1 else None


if __name__ == "__main__":
    sys.exit(main())
