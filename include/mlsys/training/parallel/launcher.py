"""Launch a distributed job with torchrun, stream its log, and fail with the failing rank's error (torch only).

    launch(["-m", "mlsys.training.parallel.job", workdir], nproc=2, on_line=print)

One node by default (``--standalone``). For several nodes set ``MLSYS_TORCHRUN_ARGS``,
e.g. ``--nnodes 2 --rdzv-backend c10d --rdzv-endpoint head:29400 --rdzv-id train-42``,
and run the same command on every node, as with plain torchrun.

Workers report errors through ``rank_errors``: each rank that raises writes
``<error dir>/rank-<r>.json`` before the exception propagates, and the earliest
one becomes the ``LaunchError`` message (the others are usually ranks torn down
after the first failure).

A watchdog fires with or without output: ``timeout_s`` bounds the whole job and
``silence_s`` the time with no log line from any rank (a silent NCCL or gloo
hang). Either ends the job's whole tree, the torchrun agent and every rank's
session, with SIGTERM then SIGKILL, and raises ``LaunchError`` naming the ranks
that were still running.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
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
from mlsys.spec import require

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
    silence_s: float | None = None,
    grace_s: float = 10.0,
) -> None:
    """Run ``torchrun ... target`` with nproc processes on this node; return when all ranks finish.

    A watchdog ends a job that hangs, with or without output: past ``timeout_s`` seconds in all, or once
    no rank has printed a line for ``silence_s`` seconds, the agent and every rank get SIGTERM, then SIGKILL
    after ``grace_s``, and ``LaunchError`` names the ranks still running. ``None`` = no limit.
    """
    require(nproc >= 1, "launch", "nproc", nproc, "use at least 1 process")
    for name, value in (("timeout_s", timeout_s), ("silence_s", silence_s)):
        require(value is None or value > 0, "launch", name, value, "use a positive number of seconds, or None")
    on_line = on_line or (lambda line: print(line, end="", flush=True))
    with tempfile.TemporaryDirectory(prefix="mlsys-ranks-") as errors:
        run_env = {**os.environ, **(env or {}), ERROR_DIR_ENV: errors}
        tail: deque[str] = deque(maxlen=40)
        by_rank: dict[str, deque[str]] = {}  # "[rankN]: ..." lines torch prints for an uncaught exception
        # a session of its own: the watchdog signals the agent's group without touching the caller's
        proc = subprocess.Popen(torchrun_command(target, nproc), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, env=run_env, preexec_fn=_die_with_parent,
                                start_new_session=True)
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), name="torchrun-log", daemon=True)
        reader.start()
        started = last = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if timeout_s and now - started > timeout_s:
                    raise LaunchError(_overtime(timeout_s, proc))
                if silence_s and now - last > silence_s:
                    raise LaunchError(f"the job printed no line for {silence_s:g} s (silence_s), a hang, and was "
                                      f"killed; silent {_running(proc.pid)}")
                wake = min([now + 1.0] + ([started + timeout_s] if timeout_s else [])
                           + ([last + silence_s] if silence_s else []))
                try:
                    line = lines.get(timeout=max(0.01, wake - now))
                except queue.Empty:
                    continue
                if line is None:
                    break
                last = time.monotonic()
                tail.append(line)
                if m := RANK_LINE.match(line):
                    by_rank.setdefault(m.group(1), deque(maxlen=30)).append(m.group(2))
                on_line(line)
            try:  # the log ended: the agent is exiting
                rc = proc.wait(timeout=max(1.0, started + timeout_s - time.monotonic()) if timeout_s else None)
            except subprocess.TimeoutExpired:
                raise LaunchError(_overtime(timeout_s, proc)) from None
        finally:  # a watchdog, a failing on_line, an Airflow task timeout or SIGTERM: no rank outlives the launch
            if proc.poll() is None:
                kill_tree(proc, grace_s)
            reader.join(timeout=grace_s)
            if not reader.is_alive():
                proc.stdout.close()
        if rc != 0:
            raise LaunchError(_failure(Path(errors), rc, "".join(tail), by_rank))


def _overtime(timeout_s: float, proc: subprocess.Popen) -> str:
    return f"the job ran past its {timeout_s:g} s limit (timeout_s) and was killed; {_running(proc.pid)}"


def _pump(stream, lines: queue.Queue) -> None:
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):
        pass  # the pipe closed under the reader: the job is being torn down
    finally:
        lines.put(None)


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


PROCFS = Path("/proc/self/stat").exists()  # Linux: the process tree and each rank's environment are readable


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """{pid: start time} of ``root`` and every live process under it; just ``{root: 0}`` without /proc."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*") if PROCFS else ():
        stat = _proc_stat(int(entry.name))
        if stat and stat[1] != "Z":
            children.setdefault(stat[0], []).append(int(entry.name))
            starts[int(entry.name)] = stat[2]
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        found[pid] = starts.get(pid, 0)
        todo += children.get(pid, [])
    return found


def _alive(pid: int, start: int) -> bool:
    if not PROCFS:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    stat = _proc_stat(pid)
    return stat is not None and stat[1] != "Z" and (not start or stat[2] == start)  # not a reused pid


def _signal(procs: dict[int, int], sig: int) -> None:
    """Signal each live process and its process group (never the caller's own group)."""
    own = os.getpgrp()
    for pid, start in procs.items():
        if not _alive(pid, start):
            continue
        with contextlib.suppress(OSError):
            pgid = os.getpgid(pid)
            if pgid != own:
                os.killpg(pgid, sig)  # a rank's session holds its own children (data loaders) too
            os.kill(pid, sig)


def kill_tree(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the torchrun agent and every process under it (each rank runs in a session of its own),
    then SIGKILL whatever is left after ``grace_s`` seconds; reap the agent."""
    procs = _descendants(proc.pid)
    _signal(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the agent once it exits
        if not any(_alive(pid, start) for pid, start in procs.items()):
            break
        time.sleep(0.05)
    _signal(procs, signal.SIGKILL)
    proc.wait()


def _running(root: int) -> str:
    """The ranks alive under the torchrun agent now, read from their environment (Linux)."""
    ranks = set()
    for pid in _descendants(root):
        try:
            env = dict(v.split(b"=", 1) for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in v)
        except OSError:
            continue
        if pid != root and b"RANK" in env and b"LOCAL_RANK" in env:
            ranks.add(int(env[b"RANK"]))
    if not ranks:
        return "no rank is known to be still running"
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, sorted(ranks)))} still running"


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
