"""What every benchmark (and the tests that start servers) shares: a free port, a device barrier."""

from __future__ import annotations

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
