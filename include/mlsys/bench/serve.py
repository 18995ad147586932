"""``mlsys bench serve``: our server vs ``mlflow models serve`` of the same model, same requests, same threads.

    mlsys bench serve --concurrency 1,8,32,128 --duration-s 5 --threads 1,2 --wrk-duration-s 60 --repeat 3

Registers a model in a temporary MLflow registry. Each repetition, for each torch
thread count and each server in turn (never both at once): start it on 127.0.0.1
(ours with ``--torch-threads T``, alias polling every ``--poll-s``; mlflow's with
``OMP_NUM_THREADS=T``, which torch reads at start, and ``--mlflow-workers`` uvicorn
workers, its default 1), check that both answer the same request the same, then drive
it with our closed-loop load generator at each concurrency for ``--duration-s``
(after ``--warmup-s``), then with ``wrk`` (if installed) at ``--wrk-concurrency`` for
``--wrk-duration-s``. Both servers get the same bodies (``--protocol mlflow``: MLflow's
scoring protocol on /invocations, which both speak), the same durations and the same
request cap (``--max-requests``, default none), and every request carries a text no
request before it carried, so our LRU cache (on, as every feature) cannot flatter us.
The peer is the logged pyfunc, which featurises with the same VectorFeaturizer.

The last line is one JSON object: ``median`` / ``range`` / ``ratios`` over the repetitions
(speedup = our req/s / mlflow's at each concurrency and thread count, from loadgen and
from wrk; our wrk p99 and errors), ``targets``, ``runs`` (every measurement),
``servers`` (each side's command and threads), ``answers`` and ``same_answers``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlsys.bench.harness import (
    add_repeat_argument,
    free_port,
    print_ratios,
    ratios,
    repeated,
    report,
    thread_counts,
)

MODEL = "mlsys-bench-serve"
CHECK_TEXTS = 20
BODIES = {  # protocol -> (our path, body prefix, body suffix); the text goes between, JSON-escaped
    "mlflow": ("/invocations", '{"dataframe_records":[{"text":"', '"}]}'),
    "mlsys": ("/predict", '{"text":"', '"}'),
}


# bandit B310 (urlopen of any scheme) below: the benchmark's own http://127.0.0.1 URLs only
def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # nosec B310
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f} s")


def _env(threads: int) -> dict[str, str]:
    """Both servers' environment: torch (and its OpenMP / MKL pools) sized to ``threads`` from the start."""
    bin_dir = str(Path(sys.executable).parent)  # mlflow execs `uvicorn` by name: it must be on PATH
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def mlsys_command(port: int, model: str, slo_ms: float, poll_s: float, threads: int) -> list[str]:
    return [sys.executable, "-m", "mlsys.cli", "serve", "--port", str(port), "--model-name", model, "--slo-ms",
            str(slo_ms), "--poll-s", str(poll_s), "--torch-threads", str(threads)]


def mlflow_command(port: int, model: str, workers: int) -> list[str]:
    return [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", f"models:/{model}/1",
            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "--workers", str(workers)]


def start(cmd: list[str], ready_url: str, threads: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=_env(threads))
    try:
        wait_http(ready_url, proc)
    except (RuntimeError, TimeoutError) as exc:
        stop(proc)
        raise RuntimeError(f"{exc}; the end of its log ({log}):\n{log.read_text(errors='replace')[-3000:]}") from None
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:  # nosec B310
        return json.loads(r.read())


def scrape(port: int) -> dict[str, float]:
    """Our server's /metrics: the figures that explain a tail (503s, GC pauses, cache hits)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:  # nosec B310
        lines = r.read().decode().splitlines()

    def value(prefix: str) -> float:
        return sum(float(line.split()[-1]) for line in lines if line.startswith(prefix))

    pauses = value("mlsys_gc_pause_seconds_count")
    return {"responses_503": value('mlsys_requests_total{code="503"}'),
            "cache_hit_rate": value("mlsys_cache_hit_rate "),
            "gc_pauses": pauses, "gc_pauses_over_50ms": pauses - value('mlsys_gc_pause_seconds_bucket{le="0.05"}'),
            "gc_frozen_objects": value("mlsys_gc_frozen_objects")}


def same_answers(answers: dict[str, list[dict]], atol: float = 1e-5) -> bool:
    """Both servers' MLflow-protocol answers to the same texts: same rows, keys, classes; probabilities within atol."""
    ours, theirs = answers.get("mlsys"), answers.get("mlflow")
    if ours is None or theirs is None or len(ours) != len(theirs):
        return False
    return all(a.keys() == b.keys() and a["prediction"] == b["prediction"]
               and all(abs(a[k] - b[k]) <= atol for k in a if k.startswith("proba_")) for a, b in zip(ours, theirs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mlsys bench serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", default="1,8,32,128", help="our load generator's levels")
    p.add_argument("--duration-s", type=float, default=5.0, help="per server, level and repetition (both servers)")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--max-requests", type=int, default=0, help="request cap per level, the same for both (0: none)")
    p.add_argument("--threads", default="1,2", help="torch intra-op thread counts, each run on both servers")
    p.add_argument("--servers", default="mlsys,mlflow")
    p.add_argument("--protocol", choices=sorted(BODIES), default="mlflow",
                   help="mlflow: both servers get the same MLflow scoring bodies on /invocations; mlsys: ours gets "
                        "its own body on /predict")
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--poll-s", type=float, default=1.0, help="our server's alias polling period (on: stressed)")
    p.add_argument("--mlflow-workers", type=int, default=1, help="uvicorn workers of mlflow models serve (its default)")
    p.add_argument("--wrk-duration-s", type=float, default=60.0, help="0: no wrk run")
    p.add_argument("--wrk-concurrency", type=int, default=32)
    add_repeat_argument(p)
    args = p.parse_args(argv)
    levels, threads = [int(c) for c in args.concurrency.split(",")], [int(t) for t in args.threads.split(",")]
    servers = args.servers.split(",")

    from mlsys.bench.loadgen import load, run_wrk, wrk_path, wrk_script

    use_wrk = bool(args.wrk_duration_s) and wrk_path() is not None
    if args.wrk_duration_s and not use_wrk:
        print("wrk is not installed (apt-get install -y wrk): only our load generator runs", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mlsys-bench-serve-") as home:
        from mlsys.settings import use_embedded_home

        use_embedded_home(home)
        from mlsys.bench.workload import comments, register_model

        register_model(MODEL)
        corpus = comments()
        check = {"dataframe_records": [{"text": t} for t in corpus[:CHECK_TEXTS]]}
        cursor = [0]  # every request, warm-ups included, sends a text no request before it sent

        def path_and_body(server: str):
            path, prefix, suffix = BODIES["mlflow" if server == "mlflow" else args.protocol]
            return path, prefix, suffix, lambda i: (prefix + json.dumps(f"{corpus[(cursor[0] + i) % len(corpus)]} "
                                                                      f"{cursor[0] + i}")[1:-1] + suffix).encode()

        def run_server(server: str, t: int, log: Path) -> tuple[list[dict], list[dict], list[dict], dict]:
            port = free_port()
            if server == "mlsys":
                proc = start(mlsys_command(port, MODEL, args.slo_ms, args.poll_s, t),
                             f"http://127.0.0.1:{port}/ready", t, log)
            else:
                proc = start(mlflow_command(port, MODEL, args.mlflow_workers), f"http://127.0.0.1:{port}/ping", t, log)
            rows, wrk_rows, extra = [], [], {}
            try:
                before = scrape(port) if server == "mlsys" else {}  # start-up is not measured: counts from here
                answer = post(f"http://127.0.0.1:{port}/invocations", check)["predictions"]
                path, prefix, suffix, body = path_and_body(server)
                for c in levels:
                    for seconds, keep in ((args.warmup_s, False), (args.duration_s, True)):
                        res = load("127.0.0.1", port, path, body, c, seconds, args.max_requests)
                        cursor[0] += res.requests + res.errors + c
                        if keep:
                            rows.append({"server": server, "threads": t, **res.summary()})
                            r = rows[-1]
                            print(f"{server:>7} t={t} c={c:<4} {r['rps']:>8,.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                                  f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}", file=sys.stderr)
                if use_wrk:
                    script = wrk_script(path, corpus, prefix, suffix)
                    w = {"server": server, "threads": t,
                         **run_wrk(f"http://127.0.0.1:{port}", script, args.wrk_concurrency, args.wrk_duration_s)}
                    wrk_rows.append(w)
                    print(f"{server:>7} t={t} wrk c={w['concurrency']:<3} {w['rps']:>8,.0f} req/s  "
                          f"p50 {w['p50_ms']:7.2f} ms  p99 {w['p99_ms']:7.2f} ms  errors {w['errors']}",
                          file=sys.stderr)
                if server == "mlsys":
                    after = scrape(port)
                    extra = {k: after[k] if k in ("cache_hit_rate", "gc_frozen_objects") else after[k] - before[k]
                             for k in after}
            finally:
                stop(proc)
            return rows, wrk_rows, answer, extra

        answers: dict[str, list[dict]] = {}

        def measure() -> dict:
            run: dict = {"results": [], "wrk": [], "mlsys_metrics": {}}
            for t in threads:
                for server in servers:
                    rows, wrk_rows, answer, extra = run_server(server, t, Path(home) / f"{server}.log")
                    run["results"] += rows
                    run["wrk"] += wrk_rows
                    answers.setdefault(server, answer)
                    if extra:
                        run["mlsys_metrics"][f"t{t}"] = extra
            return run

        runs, loads = repeated(measure, args.repeat)
        for run, load_avg in zip(runs, loads):
            run["load_average"] = load_avg
        figures = _figures(runs, levels, threads, args.wrk_concurrency if use_wrk else None)
        fields = report(figures, loads, _targets(figures, args.slo_ms))
        print_ratios(fields)
        out = {"benchmark": "serve", **fields, "runs": runs, "answers": answers, "same_answers": same_answers(answers),
               "concurrency": levels, "threads": threads, "duration_s": args.duration_s, "warmup_s": args.warmup_s,
               "max_requests": args.max_requests, "wrk_duration_s": args.wrk_duration_s if use_wrk else None,
               "wrk_concurrency": args.wrk_concurrency if use_wrk else None, "protocol": args.protocol,
               "slo_ms": args.slo_ms, "cores": os.cpu_count(), "thread_counts": thread_counts(),
               "servers": {
                   "mlsys": {"command": " ".join(["python", *mlsys_command("PORT", MODEL, args.slo_ms, args.poll_s,
                                                                            "T")[1:]]),
                             "processes": 1, "torch_threads": threads, "poll_s": args.poll_s,
                             "scoring": "inline on the event loop, adaptive batches"},
                   "mlflow": {"command": " ".join(["mlflow", *mlflow_command("PORT", MODEL, args.mlflow_workers)[1:]]),
                              "workers": args.mlflow_workers, "torch_threads": threads,
                              "threads_set_by": "OMP_NUM_THREADS and MKL_NUM_THREADS (torch reads them at start)",
                              "featurizer": "VectorFeaturizer (the logged pyfunc's fast path)",
                              "scoring": "model.predict per request on asyncio.to_thread"}}}
        print(json.dumps(out))
    return 0


def _rps(run: dict, key: str, server: str, t: int, c: int) -> float | None:
    row = next((r for r in run[key] if (r["server"], r["threads"], r["concurrency"]) == (server, t, c)), None)
    return row["rps"] if row else None


def _figures(runs: list[dict], levels: list[int], threads: list[int], wrk_c: int | None) -> dict:
    """Every ratio and figure, computed from each run's timed fields (req/s, p99, errors)."""

    def speedup(key: str, t: int, c: int):
        def formula(run):
            ours, theirs = _rps(run, key, "mlsys", t, c), _rps(run, key, "mlflow", t, c)
            return ours / theirs if ours is not None and theirs else None
        return formula

    def field(key: str, server: str, t: int, c: int, name: str):
        def formula(run):
            row = next((r for r in run[key] if (r["server"], r["threads"], r["concurrency"]) == (server, t, c)), None)
            return row[name] if row else None
        return formula

    def best(key: str, c: int):
        """Each server at its own best thread count: the peer as fast as a user could make it."""
        def formula(run):
            ours = [r for t in threads if (r := _rps(run, key, "mlsys", t, c)) is not None]
            theirs = [r for t in threads if (r := _rps(run, key, "mlflow", t, c))]
            return max(ours) / max(theirs) if ours and theirs else None
        return formula

    formulas = {f"speedup_best_c{c}": best("results", c) for c in levels}
    if wrk_c is not None:
        formulas[f"wrk_speedup_best_c{wrk_c}"] = best("wrk", wrk_c)
    for t in threads:
        for c in levels:
            formulas[f"speedup_c{c}_t{t}"] = speedup("results", t, c)
        formulas[f"p99_ms_mlsys_c32_t{t}"] = field("results", "mlsys", t, 32, "p99_ms")
        if wrk_c is not None:
            formulas[f"wrk_speedup_c{wrk_c}_t{t}"] = speedup("wrk", t, wrk_c)
            for server in ("mlsys", "mlflow"):
                formulas[f"wrk_p99_ms_{server}_t{t}"] = field("wrk", server, t, wrk_c, "p99_ms")
                formulas[f"wrk_errors_{server}_t{t}"] = field("wrk", server, t, wrk_c, "errors")
    return ratios(runs, formulas)


def _targets(figures: dict, slo_ms: float) -> dict[str, list]:
    """The issue's targets, for the figures this run measured."""
    out = {}
    for name in figures:
        if name.startswith(("speedup_c32_", "wrk_speedup_c32_", "speedup_best_c32", "wrk_speedup_best_c32")):
            out[name] = [">=", 10.0]
        elif name.startswith(("wrk_p99_ms_mlsys", "p99_ms_mlsys")):
            out[name] = ["<=", slo_ms]
        elif name.startswith("wrk_errors_mlsys"):
            out[name] = ["<=", 0]
    return out


if __name__ == "__main__":
    sys.exit(main())
