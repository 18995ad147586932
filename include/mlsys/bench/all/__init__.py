"""``mlsys bench all``: every registered benchmark, one after another, then docs/benchmarks.md and its plots.

    mlsys bench all [--size full|quick] [--only NAMES] [--skip NAMES] [--docs docs/benchmarks.md] [--images DIR]
                    [--save DIR]

Each benchmark in ``mlsys.bench.BENCHMARKS`` runs as ``python -m mlsys.cli bench NAME ARGS`` (the arguments of
``plan.PLAN`` at ``--size``: ``full`` takes about 15 minutes on the 2-core development machine) in its own
process, with a fresh temporary ``MLSYS_HOME`` (nothing is registered in yours). The load average is read
before and after each. From each JSON last line, the median, range and target of every figure go into the
block between the ``bench all`` markers of ``--docs`` (the rest of the file is left as it is) and into one
PNG per benchmark under ``--images``. A benchmark that fails is reported in the table and the run goes on;
the exit code is 1 if any failed. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlsys.bench.all import document, plan, plots
from mlsys.bench.harness import load_average

REPO = Path(__file__).resolve().parents[4]
DOCS = REPO / "docs" / "benchmarks.md" if (REPO / "docs").is_dir() else Path("docs") / "benchmarks.md"


def run_one(name: str, args: list[str], timeout_s: float) -> dict:
    """Run one benchmark in its own process and home; its figures from its JSON last line."""
    command = [sys.executable, "-m", "mlsys.cli", "bench", name, *args]
    shown = " ".join(["mlsys bench", name, *map(shlex.quote, args)])
    print(f"== {shown}", flush=True)
    out = {"name": name, "command": shown, "load_before": load_average(), "figures": [], "json": None}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mlsys-bench-{name}-") as home:
        env = {k: v for k, v in os.environ.items()
               if k not in ("MLSYS_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLSYS_ARTIFACT_URI")}
        env.update(MLSYS_HOME=home, MLFLOW_DISABLE_TELEMETRY="true",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[3]),
                                                            os.environ.get("PYTHONPATH")])))
        try:
            proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s, cwd=home)
            out["returncode"], stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            out["returncode"], stdout, stderr = 124, exc.stdout or "", f"timed out after {timeout_s:.0f} s"
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
    out["seconds"], out["load_after"] = time.perf_counter() - start, load_average()
    lines = stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        out["json"] = data
        out["figures"] = plan.figures(name, data)
        loads = data.get("load_average")
        out["load_average"] = loads if isinstance(loads, list) else None
    if out["returncode"] != 0 or data is None:
        tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
        out["error"] = tail[0][:200].replace("|", "/")
        if out["returncode"] == 0:
            out["returncode"] = 1  # ran, but printed no JSON last line
    for f in out["figures"]:
        print(f"   {f['name']}: median {f['median']:.4g} range {f['range'][0]:.4g}-{f['range'][1]:.4g}"
              + (f" target {f['target'][0]} {f['target'][1]}" if f["target"] else ""))
    print(f"   exit {out['returncode']} after {out['seconds']:.0f} s" + (f": {out['error']}" if "error" in out else ""),
          flush=True)
    return out


def _names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def main(argv: list[str] | None = None) -> int:
    from mlsys.bench import BENCHMARKS

    parser = argparse.ArgumentParser(prog="mlsys bench all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("full", "quick"), default="full",
                        help="full: about 15 minutes on 2 cores; quick: a few minutes, every benchmark end to end")
    parser.add_argument("--only", type=_names, default=[], help="comma-separated benchmarks to run (default: all)")
    parser.add_argument("--skip", type=_names, default=[], help="comma-separated benchmarks not to run")
    parser.add_argument("--docs", type=Path, default=DOCS, help="the Markdown file to update")
    parser.add_argument("--images", type=Path, default=None, help="folder for the PNGs (default: images/ beside --docs)")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per benchmark")
    parser.add_argument("--save", type=Path, default=None, help="a folder to write each benchmark's full JSON to (NAME.json)")
    args = parser.parse_args(argv)
    known = [n for n in BENCHMARKS if n != "all"]
    unknown = sorted(set(args.only + args.skip) - set(known))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}: choose from {known}")
    names = [n for n in known if (not args.only or n in args.only) and n not in args.skip]
    images = args.images or args.docs.parent / "images"

    start, load_before = time.perf_counter(), load_average()
    results = []
    for name in names:
        if name not in plan.PLAN:
            print(f"note: no plan for {name!r} in mlsys.bench.all.plan.PLAN: it runs with its own defaults")
        results.append(run_one(name, plan.PLAN.get(name, {}).get(args.size, []), args.timeout_s))
        if args.save and results[-1]["json"] is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            (args.save / f"{name}.json").write_text(json.dumps(results[-1]["json"], indent=1))
    meta = {"machine": document.machine(), "commit": document.commit(), "load_before": load_before,
            "load_after": load_average(), "seconds": time.perf_counter() - start,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["mlsys bench all", "--size", args.size] + (["--only", ",".join(args.only)] if args.only else [])
                                + (["--skip", ",".join(args.skip)] if args.skip else []))}
    pngs = {}
    for r in results:
        loads = r.get("load_average") or [r["load_before"]]
        subtitle = f"{meta['commit']}, --size {args.size}, load {min(loads):.1f}-{max(loads):.1f}"
        path = plots.plot(r["name"], r["figures"], images / f"bench-{r['name']}.png", subtitle)
        if path:
            pngs[r["name"]] = os.path.relpath(path, args.docs.parent)
    document.write(args.docs, document.markdown(results, meta, pngs))
    print(f"wrote {args.docs} and {len(pngs)} plot(s) under {images}")
    failed = [r["name"] for r in results if r["returncode"] != 0]
    print(json.dumps({"benchmark": "all", "size": args.size, **{k: meta[k] for k in ("commit", "seconds", "load_before", "load_after")},
                      "machine": meta["machine"], "failed": failed, "docs": str(args.docs), "images": sorted(pngs.values()),
                      "results": [{k: r.get(k) for k in ("name", "command", "seconds", "returncode", "load_before",
                                                         "load_after", "load_average", "figures")} for r in results]}))
    return 1 if failed else 0
