"""Failpoints: named places where the fault-injection suite kills a stage's process for real.

    MLSYS_FAILPOINTS="ingest.committed=1,train.mid_epoch=1"   # each fires (SIGKILL) that many times in all

A failpoint is a no-op unless ``MLSYS_FAILPOINTS`` names it, so production runs
pay one dictionary lookup. When it fires, the process sends itself SIGKILL: no
``finally``, no ``atexit``, no MLflow run end, exactly as the OOM killer or a
lost node would leave things. How many times each point has fired is counted in
``$MLSYS_HOME/failpoints/<name>`` under an exclusive lock, so an Airflow retry
(a new process) runs on once the count is used up.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

ENV = "MLSYS_FAILPOINTS"


def _armed() -> dict[str, int]:
    spec = os.environ.get(ENV, "").strip()
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = item.partition("=")
        out[name.strip()] = int(count or 1)
    return out


def failpoint(name: str) -> None:
    """SIGKILL this process here if ``name`` is armed and has fired fewer times than asked."""
    times = _armed().get(name)
    if not times:
        return
    from mlsys.settings import settings

    folder = settings().home / "failpoints"
    folder.mkdir(parents=True, exist_ok=True)
    counter = Path(folder / name)
    with open(counter, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fired = len(fh.read().splitlines())
        if fired >= times:
            return
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def fired(name: str) -> int:
    """How many times ``name`` has fired under this ``$MLSYS_HOME``."""
    from mlsys.settings import settings

    counter = settings().home / "failpoints" / name
    return len(counter.read_text().splitlines()) if counter.is_file() else 0
