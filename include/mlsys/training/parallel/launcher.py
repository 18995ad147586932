"""Launch a distributed job with torchrun, stream its log, and fail with the failing rank's error (torch only).

    launch(["-m", "mlsys.training.parallel.job", workdir], nproc=2, on_line=print)

One node by default (``--standalone``). For several nodes set ``MLSYS_TORCHRUN_ARGS``,
e.g. ``--nnodes 2 --rdzv-backend c10d --rdzv-endpoint head:29400 --rdzv-id train-42``,
and run the same command on every node, as with plain torchrun.

Workers report errors through ``rank_errors``: each rank that raises writes
``<error dir>/rank-<r>.json`` before the exception propagates, and the earliest
one becomes the ``LaunchError`` message (the others are usually ranks torn down
after the first failure).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

from mlsys.settings import settings

ERROR_DIR_ENV = "MLSYS_RANK_ERROR_DIR"
EVENT_PREFIX = "MLSYS_EVENT "  # rank 0 prints machine-readable lines: MLSYS_EVENT {json}


class LaunchError(RuntimeError):
    """The job failed; the message carries the failing rank's error."""


def torchrun_command(target: Sequence[str], nproc: int) -> list[str]:
    extra = shlex.split(settings().torchrun_args) or ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *extra, "--nproc-per-node", str(nproc), *target]


def launch(
    target: Sequence[str],
    nproc: int,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> None:
    """Run ``torchrun ... target`` with nproc processes on this node; return when all ranks finish."""
    if nproc < 1:
        raise ValueError(f"nproc={nproc} is invalid: use at least 1 process")
    on_line = on_line or (lambda line: print(line, end="", flush=True))
    with tempfile.TemporaryDirectory(prefix="mlsys-ranks-") as errors:
        run_env = {**os.environ, **(env or {}), ERROR_DIR_ENV: errors}
        tail: deque[str] = deque(maxlen=40)
        by_rank: dict[str, deque[str]] = {}  # "[rankN]: ..." lines torch prints for an uncaught exception
        proc = subprocess.Popen(torchrun_command(target, nproc), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, env=run_env, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s if timeout_s else None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line)
                if m := RANK_LINE.match(line):
                    by_rank.setdefault(m.group(1), deque(maxlen=30)).append(m.group(2))
                on_line(line)
                if deadline and time.monotonic() > deadline:
                    raise LaunchError(f"the job ran past its {timeout_s:.0f} s limit")
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc != 0:
            raise LaunchError(_failure(Path(errors), rc, "".join(tail), by_rank))


RANK_LINE = re.compile(r"^\[rank(\d+)\]:(.*\n?)")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")
ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+)", re.S)


def _failure(errors: Path, rc: int, tail: str, by_rank: dict[str, deque[str]]) -> str:
    reports = []
    for path in errors.glob("rank-*.json"):
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # a rank killed while writing its report; the others still name the cause
    if not reports and (m := ROOT_CAUSE.search(tail)) and m.group(1) in by_rank:
        lines = list(by_rank[m.group(1)])
        return f"rank {m.group(1)} failed: {lines[-1].strip()}\n{''.join(lines)}(torchrun exit code {rc})"
    if not reports and (m := ROOT_CAUSE.search(tail)):
        errors_seen = [line for line in tail.splitlines() if EXCEPTION_LINE.match(line)]
        if errors_seen:  # unprefixed output: the first exception in the log is the worker's, before torchrun's own
            return f"rank {m.group(1)} failed: {errors_seen[0]}\nlast lines of the log:\n{tail}"
    if not reports:
        return f"torchrun exited with code {rc} and no rank reported an error; last lines of the log:\n{tail}"
    first = min(reports, key=lambda r: r["time"])
    return (f"rank {first['rank']} failed: {first['type']}: {first['message']}\n"
            f"{first['traceback']}(torchrun exit code {rc}; {len(reports)} rank(s) reported errors)")


def _die_with_parent() -> None:
    """In the torchrun agent (Linux): SIGKILL it when the launching process dies (a killed Airflow task)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def exit_with_parent(poll_s: float = 0.2) -> None:
    """In a worker: exit at once when its parent (the torchrun agent) is gone.

    torchrun starts each worker in a session of its own, so killing the task's process group
    does not reach the workers; without this they would train on, and write checkpoints, as orphans.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(137)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def rank_errors(fn: Callable) -> Callable:
    """Decorate a worker's main: a raised exception is written for the launcher, then re-raised."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            folder = os.environ.get(ERROR_DIR_ENV)
            if folder and not isinstance(exc, SystemExit):
                rank = os.environ.get("RANK", "0")
                report = {"rank": int(rank), "type": type(exc).__name__, "message": str(exc), "time": time.time(),
                          "traceback": "".join(traceback.format_exception(exc)[-6:])}
                Path(folder, f"rank-{rank}.json").write_text(json.dumps(report))
            raise

    return wrapper


def emit(kind: str, **payload) -> None:
    """Print one machine-readable event line (call on rank 0 only)."""
    print(EVENT_PREFIX + json.dumps({"kind": kind, **payload}), flush=True)


def parse_event(line: str) -> dict | None:
    at = line.find(EVENT_PREFIX)
    return json.loads(line[at + len(EVENT_PREFIX):]) if at >= 0 else None
