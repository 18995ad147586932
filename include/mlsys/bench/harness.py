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
