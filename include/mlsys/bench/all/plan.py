"""What ``mlsys bench all`` runs: each benchmark's arguments at two sizes, and how to read its figures.

``full`` sizes take about 15 minutes in all on the 2-core development machine (idle); ``quick`` sizes
take a few minutes and exercise every benchmark end to end. A benchmark registered in
``mlsys.bench.BENCHMARKS`` without a plan here runs with its own defaults (and a note says so).

Figures: a benchmark's JSON last line carries ``median`` / ``range`` / ``targets`` dicts (``harness.report``);
nested dicts are flattened to ``outer/inner``. For a JSON without them, ``EXTRACT`` reads the figures from
the fields that benchmark prints. ``FALLBACK_TARGETS`` are the issue's targets for figures whose JSON
names none.
"""

from __future__ import annotations

import re
import statistics
from typing import Any, Callable

PLAN: dict[str, dict[str, list[str]]] = {
    "stats": {"full": ["--rows", "1000000", "--repeat", "3"], "quick": ["--rows", "100000", "--repeat", "2"]},
    "label": {"full": ["--rows", "100000", "--repeat", "3"], "quick": ["--rows", "5000", "--repeat", "2"]},
    "label_scale": {"full": ["--rows", "200000"], "quick": ["--rows", "5000", "--appliers", "fast,dask"]},
    "label_quality": {"full": ["--seeds", "0,1,2"], "quick": ["--seeds", "0", "--epochs", "100"]},
    "pipeline": {"full": ["--repeat", "3"],
                 "quick": ["--batch", "256", "--width", "256", "--sweep", "1,8", "--steps", "3", "--warmup", "1",
                           "--ddp-rows", "128", "--repeat", "2"]},
    "spill": {"full": ["--repeat", "3"],
              "quick": ["--model-mb", "64", "--ram-budget-mb", "16", "--fit-mb", "8", "--repeat", "2"]},
    "sharp": {"full": ["--repeat", "3"],
              "quick": ["--steps", "2", "--width", "256", "--batch", "256", "--ceiling-rounds", "10", "--repeat", "2"]},
    "mop": {"full": [], "quick": ["--configs", "4", "--epochs", "1", "--repeats", "1"]},
    "explain": {"full": ["--full-positions", "64", "--repeats", "3"],
                "quick": ["--model", "small", "--size", "64", "--stride", "8", "--full-positions", "16", "--repeats", "1"]},
    "batch": {"full": ["--rows", "1000000", "--repeat", "3"],
              "quick": ["--rows", "20000", "--threads", "1", "--repeat", "1"]},
    "serve": {"full": ["--concurrency", "1,32", "--duration-s", "5", "--repeat", "3"],
              "quick": ["--concurrency", "32", "--duration-s", "1", "--warmup-s", "0.2", "--threads", "1",
                        "--wrk-duration-s", "0", "--repeat", "1"]},
    "krypton": {"full": ["--synthetic", "--repeats", "3"],
                "quick": ["--synthetic", "--frames", "5", "--size", "112", "--mode", "exact", "--repeats", "1"]},
}

FALLBACK_TARGETS: dict[str, list[tuple[str, list]]] = {  # (figure-name pattern, target), first match wins
    "stats": [(r"^speedup_1t$", [">=", 10.0])],
    "label_quality": [(r"weak_label_accuracy", [">=", 0.88]), (r"classifier_accuracy", [">=", 0.92])],
    "pipeline": [(r"^pipeline_efficiency$", [">=", 0.85]), (r"^ddp_efficiency$", [">=", 0.85])],
    "sharp": [(r"^speedup$", [">=", 1.8]), (r"^share_of_ceiling$", [">=", 0.95])],
    "batch": [(r"speedup_vs_pyfunc", [">=", 3.0]), (r"(fraction|share)_of_floor", [">=", 0.9])],
    "serve": [(r"speedup.*32", [">=", 10.0]), (r"p99", ["<=", 50.0])],
    "krypton": [(r"share_of_(theoretical|bound).*exact", [">=", 0.7])],
}


def _numbers(prefix: str, value: Any) -> dict[str, float]:
    """Numeric leaves of ``value``, nested dict keys joined by ``/``."""
    if isinstance(value, bool) or value is None:
        return {}
    if isinstance(value, (int, float)):
        return {prefix: float(value)}
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for k, v in value.items():
            out.update(_numbers(f"{prefix}/{k}" if prefix else str(k), v))
        return out
    return {}


def _ranges(prefix: str, value: Any) -> dict[str, list[float]]:
    """``[lo, hi]`` leaves of ``value``, keyed as ``_numbers`` keys them."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return {prefix: [float(value[0]), float(value[1])]}
    if isinstance(value, dict):
        out: dict[str, list[float]] = {}
        for k, v in value.items():
            out.update(_ranges(f"{prefix}/{k}" if prefix else str(k), v))
        return out
    return {}


def _rows(keys: tuple[str, ...], label: tuple[str, ...]):
    """Figures from a ``{"results": [row, ...]}`` JSON: ``key[label values]`` for each numeric key of each row."""
    def extract(data: dict) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for row in data.get("results", []):
            for key in keys:
                if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool):
                    name = f"{key}[{','.join(str(row.get(x)) for x in label)}]"
                    out.setdefault(name, []).append(float(row[key]))
        return out
    return extract


def _batch(data: dict) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for key in ("speedup_vs_pyfunc", "fraction_of_floor"):
        for rows, value in zip(data.get("rows", []), data.get(key) or []):
            if isinstance(value, (int, float)):
                out[f"{key}[{rows:,} rows]"] = [float(value)]
    return out


def _label_quality(data: dict) -> dict[str, list[float]]:
    runs = data.get("runs") or [data]
    out: dict[str, list[float]] = {}
    for name, get in (("weak_label_accuracy", lambda r: r.get("weak_label_accuracy")),
                      ("classifier_accuracy", lambda r: (r.get("classifier") or {}).get("accuracy", r.get("classifier_accuracy"))),
                      ("classifier_f1", lambda r: (r.get("classifier") or {}).get("f1", r.get("classifier_f1")))):
        values = [float(v) for v in (get(r) for r in runs) if isinstance(v, (int, float))]
        if values:
            out[name] = values
    return out


def _serve(data: dict) -> dict[str, list[float]]:
    value = data.get("speedup_at_32")
    return {"speedup_at_32": [float(value)]} if isinstance(value, (int, float)) else {}


def _label_scale(data: dict) -> dict[str, list[float]]:
    appliers = data.get("appliers") or {}
    ours = (appliers.get("fast") or {}).get("rows_per_s")
    return {f"speedup_vs_{name}": [ours / a["rows_per_s"]] for name, a in appliers.items()
            if name != "fast" and ours and a.get("rows_per_s")}


EXTRACT: dict[str, Callable[[dict], dict[str, list[float]]]] = {
    "krypton": _rows(("speedup", "speedup_share_of_theoretical"), ("video", "mode")),
    "explain": _rows(("speedup", "ssim"), ("model", "mode")), "batch": _batch, "label_quality": _label_quality, "serve": _serve,
    "label_scale": _label_scale,
}


def target_for(benchmark: str, figure: str, data: dict) -> list | None:
    own = data.get("targets") if isinstance(data.get("targets"), dict) else {}
    if figure in own:
        return own[figure]
    for pattern, target in FALLBACK_TARGETS.get(benchmark, []):
        if re.search(pattern, figure):
            return target
    return None


def figures(benchmark: str, data: dict) -> list[dict[str, Any]]:
    """``[{"name", "median", "range", "repeat", "target"}]`` of one benchmark's JSON."""
    out = []
    medians = data.get("median") if isinstance(data.get("median"), dict) else data.get("medians")
    if isinstance(medians, dict):
        ranges = _ranges("", data.get("range") or {})
        repeat = data.get("repeat") or data.get("repeats")
        for name, value in _numbers("", medians).items():
            out.append({"name": name, "median": value, "range": ranges.get(name, [value, value]), "repeat": repeat,
                        "target": target_for(benchmark, name, data)})
        return out
    for name, values in EXTRACT.get(benchmark, lambda d: {})(data).items():
        out.append({"name": name, "median": statistics.median(values), "range": [min(values), max(values)],
                    "repeat": len(values), "target": target_for(benchmark, name, data)})
    return out
