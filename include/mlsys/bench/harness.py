"""What every benchmark (and the tests that start servers) shares: a free port, a device barrier, repetitions
and the summary of their ratios (median, range, load average before each, targets)."""

from __future__ import annotations

import os
import socket
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sync(device: Any) -> None:
    """Wait for the device's queued work (CUDA is asynchronous), so a timer stops when the work is done."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


DEFAULT_REPEAT = 3  # `--repeat`: these 2-core machines swing by about ±10% run to run


def add_repeat_argument(parser) -> None:
    """The ``--repeat R`` option every benchmark takes (default 3)."""
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"repetitions of every measurement; medians are reported (default {DEFAULT_REPEAT})")


def load_average() -> float:
    """The 1-minute load average now (recorded before each repetition: a busy host explains a slow run)."""
    import os

    return round(os.getloadavg()[0], 2)


def summary(values: list[float], digits: int = 3) -> dict[str, Any]:
    """``{"median", "range": [min, max], "repeat", "values"}`` of one figure over the repetitions."""
    import statistics

    if not values:
        raise ValueError("summary of no values: run at least one repetition (--repeat 1 or more)")
    return {"median": round(statistics.median(values), digits), "range": [round(min(values), digits),
            round(max(values), digits)], "repeat": len(values), "values": [round(v, digits) for v in values]}


def repeated(measure, repeat: int) -> tuple[list[Any], list[float]]:
    """Run ``measure()`` ``repeat`` times; return (its results, the load average before each)."""
    if repeat < 1:
        raise ValueError(f"--repeat={repeat}: use 1 or more")
    results, loads = [], []
    for _ in range(repeat):
        loads.append(load_average())
        results.append(measure())
    return results, loads


def thread_counts() -> dict[str, int]:
    """The thread pools that could run this process's work: torch's (if loaded), pyarrow's, and the cores."""
    import sys

    out = {"cpus": os.cpu_count() or 1}
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].get_num_threads()
    if "pyarrow" in sys.modules:
        out["pyarrow"] = sys.modules["pyarrow"].cpu_count()
    return out


def ratios(runs: list[dict[str, Any]], formulas: dict[str, Any], digits: int = 3) -> dict[str, dict[str, Any]]:
    """``{name: summary}`` of each ratio, computed by ``formulas[name](run)`` from every run's timed fields.

    A formula that returns None (a figure that run did not measure) leaves that run out of its summary;
    a ratio no run measured is left out.
    """
    out = {}
    for name, formula in formulas.items():
        values = [v for v in (formula(run) for run in runs) if v is not None]
        if values:
            out[name] = summary(values, digits)
    return out


def report(figures: dict[str, dict[str, Any]], loads: list[float], targets: dict[str, list] | None = None) -> dict[str, Any]:
    """The fields every benchmark's JSON carries: ``repeat``, ``load_average`` (before each repetition),
    ``median`` and ``range`` of every ratio, the full ``ratios`` summaries and the ``targets``
    (``{name: [">=" or "<=", value]}``)."""
    return {"repeat": len(loads), "load_average": loads,
            "median": {k: s["median"] for k, s in figures.items()},
            "range": {k: s["range"] for k, s in figures.items()},
            "ratios": figures, "targets": dict(targets or {})}


def meets(value: float, target: list) -> bool:
    """Whether ``value`` meets a target ``[">=", x]`` or ``["<=", x]``."""
    op, bound = target
    if op not in (">=", "<="):
        raise ValueError(f"target {target!r}: use ['>=', value] or ['<=', value]")
    return value >= bound if op == ">=" else value <= bound


def print_ratios(fields: dict[str, Any]) -> None:
    """One line per ratio: its median, range and target, from ``report``'s fields."""
    loads = fields["load_average"]
    print(f"{fields['repeat']} repetition(s); load average before each: {', '.join(f'{x:.2f}' for x in loads)}")
    for name, s in fields["ratios"].items():
        target = fields["targets"].get(name)
        verdict = ""
        if target:
            verdict = f"   target {target[0]} {target[1]}: {'met' if meets(s['median'], target) else 'NOT met'}"
        print(f"{name:>28}: median {s['median']:<8g} range {s['range'][0]:g}-{s['range'][1]:g}{verdict}")
