"""A torchrun worker that hangs without a word, for the launcher's watchdog tests.

    hang_worker.py PIDS_DIR HANG_RANK SECONDS

Every rank says hello and leaves ``<PIDS_DIR>/rank-<r>`` holding its pid and its parent's (the torchrun agent).
Rank HANG_RANK then sleeps SECONDS in silence and ignores SIGTERM, as a rank stuck in a collective does; the
other ranks finish at once. HANG_RANK = -1: every rank hangs.
"""

import os
import signal
import sys
import time
from pathlib import Path

rank = int(os.environ["RANK"])
print(f"hello from rank {rank}", flush=True)
Path(sys.argv[1], f"rank-{rank}").write_text(f"{os.getpid()} {os.getppid()}")
if int(sys.argv[2]) in (rank, -1):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
    time.sleep(float(sys.argv[3]))
