"""``mlsys bench serve``: our server vs ``mlflow models serve``, same model, same requests, closed loop.

    mlsys bench serve --concurrency 1,8,32,128 --duration-s 5

Registers a model in a temporary MLflow registry, then for each server in
turn (never both at once) starts it on 127.0.0.1, waits until it is ready and
drives it with loadgen at each concurrency: throughput (200s per second), p50,
p99 and errors (non-200 answers and connection errors). Every request carries a
distinct text, so our LRU cache (on, as every feature) cannot flatter us.
The last line is one JSON object: ``results`` [{server, concurrency, rps, p50_ms, p99_ms, errors}].
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

from mlsys.bench.harness import free_port

MODEL = "mlsys-bench-serve"


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


def start_mlsys(port: int, model: str, slo_ms: float, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlsys.cli", "serve", "--port", str(port), "--model-name", model, "--slo-ms", str(slo_ms)]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/ready", proc)
    return proc


def start_mlflow(port: int, model: str, log: Path) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", f"models:/{model}/1",
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    bin_dir = str(Path(sys.executable).parent)  # mlflow execs `uvicorn` by name: it must be on PATH
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    wait_http(f"http://127.0.0.1:{port}/ping", proc)
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mlsys bench serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", default="1,8,32,128")
    p.add_argument("--duration-s", type=float, default=5.0, help="per server and concurrency")
    p.add_argument("--max-requests", type=int, default=30_000, help="per server and concurrency")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--servers", default="mlsys,mlflow")
    p.add_argument("--slo-ms", type=float, default=50.0)
    args = p.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    servers = args.servers.split(",")

    from mlsys.bench.loadgen import load

    with tempfile.TemporaryDirectory(prefix="mlsys-bench-serve-") as home:
        from mlsys.settings import use_embedded_home

        use_embedded_home(home)
        from mlsys.bench.workload import comments, register_model

        register_model(MODEL)
        corpus = comments()
        texts = [f"{corpus[i % len(corpus)]} {i}" for i in range(args.max_requests * 3 * len(levels) + 10_000)]
        bodies = {"mlsys": ("/predict", [json.dumps({"text": t}).encode() for t in texts]),
                  "mlflow": ("/invocations", [json.dumps({"dataframe_records": [{"text": t}]}).encode() for t in texts])}
        results, extra, answers = [], {}, {}
        for server in servers:
            port = free_port()
            log = Path(home) / f"{server}.log"
            proc = start_mlsys(port, MODEL, args.slo_ms, log) if server == "mlsys" else start_mlflow(port, MODEL, log)
            try:
                path, reqs = bodies[server]
                if server == "mlsys":
                    answers[server] = [r["probabilities"][1] for r in post(f"http://127.0.0.1:{port}/predict",
                                                                             [{"text": t} for t in corpus[:20]])["predictions"]]
                else:
                    answers[server] = [r["proba_1"] for r in post(f"http://127.0.0.1:{port}/invocations",
                                                                  {"dataframe_records": [{"text": t} for t in corpus[:20]]})["predictions"]]
                cursor = 0  # every request, warm-up included, sends a text this server has not seen
                for c in levels:
                    warm = load("127.0.0.1", port, path, reqs[cursor:], c, args.warmup_s, args.max_requests)
                    cursor += warm.requests + warm.errors + c
                    res = load("127.0.0.1", port, path, reqs[cursor:], c, args.duration_s, args.max_requests)
                    cursor += res.requests + res.errors + c
                    row = {"server": server, **res.summary()}
                    results.append(row)
                    print(f"{server:>7} c={c:<4} {row['rps']:>8,.0f} req/s  p50 {row['p50_ms']:7.2f} ms  "
                          f"p99 {row['p99_ms']:7.2f} ms  errors {row['errors']}", file=sys.stderr)
                if server == "mlsys":
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:  # nosec B310
                        text = r.read().decode()
                    extra["mlsys_cache_hit_rate"] = float(next(
                        line.split()[-1] for line in text.splitlines() if line.startswith("mlsys_cache_hit_rate ")))
            finally:
                stop(proc)
        out = {"results": results, "slo_ms": args.slo_ms, "duration_s": args.duration_s, "cores": os.cpu_count(),
               "load_avg_1m": os.getloadavg()[0], **extra}
        if len(answers) == 2:
            out["same_answers"] = all(abs(a - b) < 1e-5 for a, b in zip(answers["mlsys"], answers["mlflow"]))
        by = {(r["server"], r["concurrency"]): r for r in results}
        if ("mlsys", 32) in by and ("mlflow", 32) in by and by[("mlflow", 32)]["rps"]:
            ours, theirs = by[("mlsys", 32)], by[("mlflow", 32)]
            out["speedup_at_32"] = round(ours["rps"] / theirs["rps"], 2)
            out["target_met_at_32"] = bool(out["speedup_at_32"] >= 15 and ours["p99_ms"] <= args.slo_ms and ours["errors"] == 0)
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
