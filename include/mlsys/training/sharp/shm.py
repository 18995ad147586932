"""SHARP's shared memory: a job's folder in ``/dev/shm``, sized before it starts and reaped after its owner dies.

Every job's weights, optimizer state and moving step states are files under one folder per
``train_many`` call, ``/dev/shm/mlsys-sharp-<pid>-<random>``: memory, not disk. Two things go wrong
in a container:

- **too small**: Docker gives a container 64 MB of ``/dev/shm`` unless ``shm_size`` says otherwise
  (docker-compose.yaml sets it from ``MLSYS_SHM_SIZE``). ``check_space`` compares an estimate of what
  the jobs store with the free space (``os.statvfs``) before anything is written, and refuses with
  the size needed and the setting to raise, instead of a ``posix_fallocate`` ENOSPC halfway through.
- **leaked**: a killed task never runs its ``finally``. The folder's name carries the owner's pid;
  ``reap_leaked`` (run by the next job) removes the folders whose owner process is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

# bandit B108 (a fixed temp path): SHARP's shared memory on purpose, in mkdtemp folders (0700) it reaps
SHM = Path("/dev/shm")  # nosec B108
PREFIX = "mlsys-sharp-"
_OWNED = re.compile(rf"^{re.escape(PREFIX)}(?P<pid>\d+)-")
# Bytes stored per parameter byte: the weights, and room for the optimizer's state (Adam keeps two
# moments) and the step states that move between workers.
STATE_FACTOR = 4
SETTING = "MLSYS_SHM_SIZE (the shm_size of the Airflow workers in docker-compose.yaml; `--shm-size` for docker run)"


class ShmSpaceError(OSError):
    """Not enough free space where SHARP keeps its jobs' state."""


def free_bytes(path: str | Path) -> int:
    """Free bytes an unprivileged process may use on the filesystem of ``path``."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:  # a root not made yet: the folder it will be made in
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def job_bytes(job) -> int:
    """Estimated bytes ``job`` keeps in its store: parameters and buffers, times STATE_FACTOR for the parameters."""
    import torch

    from mlsys.training.parallel.partitioner import layers_of

    recipe = job.recipe()
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            layers = list(layers_of(recipe.layers()))
    except Exception:  # noqa: BLE001 -- a builder that insists on real tensors
        layers = list(layers_of(recipe.layers()))
    params = sum(p.numel() * p.element_size() for layer in layers for p in layer.parameters())
    buffers = sum(b.numel() * b.element_size() for layer in layers for b in layer.buffers())
    return STATE_FACTOR * params + buffers


def check_space(jobs: Iterable, root: str | Path) -> int:
    """Refuse before starting when the jobs' estimated state does not fit the free space at ``root``."""
    jobs = list(jobs)
    need = sum(job_bytes(j) for j in jobs)
    free = free_bytes(root)
    if need > free:
        where = f"{root} (shared memory)" if Path(root).resolve().is_relative_to(SHM) else str(root)
        raise ShmSpaceError(
            28, f"SHARP needs about {_mib(need)} for {len(jobs)} job(s) in {where}, but only {_mib(free)} is free: "
            f"raise {SETTING} to at least {_mib(need * 5 // 4)}, or train fewer or smaller jobs at once")
    return need


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def reap_leaked(folder: str | Path = SHM) -> list[Path]:
    """Remove the job folders under ``folder`` whose owner process (the pid in the name) is gone."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _OWNED.match(entry.name)
        if match and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def job_root(jobs: Iterable) -> Path:
    """A fresh folder for one ``train_many`` call: in /dev/shm when writable, after reaping and sizing it."""
    shm = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else None
    if shm is not None:
        reap_leaked(shm)
    check_space(jobs, shm or tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=shm))
