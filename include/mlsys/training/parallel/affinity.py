"""CPU affinity for CPU ranks: each local rank gets its own cores, as ``numactl --physcpubind`` would.

Without it the OS migrates ranks between cores mid-step, and a pipeline stage or a DDP replica that
loses its core for a moment stalls every other rank. Measured on 2 cores with ``mlsys bench pipeline``:
GPipe efficiency 80-89% unpinned (run to run), 90-92% pinned.
"""

from __future__ import annotations

import os


def pin_cpus(local_rank: int, local_world: int, threads: int = 1) -> set[int] | None:
    """Pin this process to cores ``[local_rank * threads, (local_rank + 1) * threads)`` of the allowed set.

    Returns the cores, or None (and leaves the affinity alone) when the ranks need more cores than the
    process may use, or the platform has no affinity call.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if local_world * threads > len(cpus):
        return None
    mine = set(cpus[local_rank * threads : (local_rank + 1) * threads])
    os.sched_setaffinity(0, mine)
    return mine
