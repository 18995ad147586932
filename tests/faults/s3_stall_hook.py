"""Run the ``mlsys`` CLI with a hook on boto3's S3 requests: the S3-stall scenario's way of timing its fault.

    python tests/faults/s3_stall_hook.py label [mlsys args...]

The fault itself is real: the hook sends SIGSTOP to the moto_server process (the S3 endpoint) just before
the chosen request leaves this process, so that request, and every one after it, waits on a frozen endpoint
until the test sends SIGCONT. The hook only picks the moment. Environment:

    S3_STALL_LOG        append one line per S3 request: "<n> <operation> <key>", where n numbers the requests
                        of the write phase (the first write request, PutObject or DeleteObject ..., and
                        every request after it); 0 before it
    S3_STALL_AT         freeze the endpoint just before the n-th request of the write phase
    S3_STALL_PID        the pid to SIGSTOP (the moto_server)
    S3_STALL_MARK       file written (the monotonic time, the request) once the endpoint is frozen
    S3_CLIENT_CONFIG    JSON of botocore ``Config`` arguments every S3 client of this process gets
                        (e.g. tight timeouts: {"read_timeout": 2, "connect_timeout": 2,
                        "retries": {"max_attempts": 2, "mode": "standard"}}); unset: boto3's defaults

SIGUSR1 makes this process dump every thread's stack to stderr (faulthandler): the test sends it before it
gives up on a write that hangs, so the report names the function that hangs.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
import time
from urllib.parse import unquote, urlsplit

WRITES = ("PutObject", "DeleteObject", "DeleteObjects", "CreateMultipartUpload", "UploadPart",
          "CompleteMultipartUpload", "CopyObject")

_lock = threading.Lock()
_n = 0  # requests of the write phase so far
_fired = False


def _operation(event_name: str) -> str:
    return event_name.rsplit(".", 1)[-1]


def _on_send(request, event_name: str = "", **_) -> None:
    global _n, _fired
    op = _operation(event_name)
    key = unquote(urlsplit(request.url).path)
    with _lock:
        if _n or op in WRITES:
            _n += 1
        n = _n
        log = os.environ.get("S3_STALL_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(f"{n} {op} {key}\n")
        at = int(os.environ.get("S3_STALL_AT", "0") or 0)
        if not _fired and at and n == at:
            _fired = True
            os.kill(int(os.environ["S3_STALL_PID"]), signal.SIGSTOP)
            mark = os.environ["S3_STALL_MARK"]
            with open(mark + ".tmp", "w") as fh:
                json.dump({"at": time.monotonic(), "request": n, "operation": op, "key": key}, fh)
            os.replace(mark + ".tmp", mark)


def install() -> None:
    import boto3

    boto3.setup_default_session()
    session = boto3.DEFAULT_SESSION
    config = os.environ.get("S3_CLIENT_CONFIG")
    if config:
        from botocore.config import Config

        session._session.set_default_client_config(Config(**json.loads(config)))
    # clients made from the default session (mlsys.storage.s3 uses boto3.client) copy its handlers
    session.events.register("before-send.s3", _on_send)


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    install()
    from mlsys.cli import main

    sys.exit(main(sys.argv[1:]))
