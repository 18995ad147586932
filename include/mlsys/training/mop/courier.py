"""How models hop: control messages through a TCPStore, model states point to point (torch only).

    Post      JSON messages in named queues of a ``torch.distributed.TCPStore`` (``queue_push`` /
              ``queue_pop``); one client connection per thread, since a blocking pop holds its connection
    Courier   a thread on every rank: it keeps the packed states of the configurations that ended a unit
              here (parked), and sends one to another rank when the coordinator says where it goes next

    rank a (ran A's unit)                 coordinator (rank 0)                  rank b (idle)
    park(A, bytes); event "A done"  ->    assign A to b
                                          courier/a: {A -> b, tag}     work/b: {A from a, tag, size}
    courier: send(bytes, b, tag)   ======== point to point (gloo) =======>    recv(size, a, tag); train A

The state is sent when its next worker is known, not when its unit ends: a worker busy with another
unit still hands over a parked model at once (its courier thread does), so no hop waits for a unit.
Hops go over a gloo group on host memory even on GPUs: gloo's point-to-point calls may come from two
threads at once (courier sends while the main thread receives); NCCL's may not.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import torch
import torch.distributed as dist

STOP = {"stop": True}
EVENTS = "mop/events"


def work_queue(rank: int) -> str:
    return f"mop/work/{rank}"


def courier_queue(rank: int) -> str:
    return f"mop/courier/{rank}"


class Post:
    """JSON messages in named queues of a store; ``clone`` gives another thread its own connection."""

    def __init__(self, store: dist.Store):
        self.store = store

    def put(self, queue: str, message: dict[str, Any]) -> None:
        self.store.queue_push(queue, json.dumps(message))

    def get(self, queue: str) -> dict[str, Any]:
        return json.loads(self.store.queue_pop(queue))  # blocks until a message arrives

    def clone(self) -> "Post":
        return Post(self.store.clone())


class Courier(threading.Thread):
    """Parks packed states and sends them where the coordinator says; counts the bytes it sent."""

    def __init__(self, post: Post, group: dist.ProcessGroup, rank: int):
        super().__init__(name=f"mop-courier-{rank}", daemon=True)
        self.post, self.group, self.rank = post, group, rank
        self._parked: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self.hops = 0

    def park(self, config: str, data: torch.Tensor) -> None:
        with self._lock:
            self._parked[config] = data

    def take(self, config: str) -> torch.Tensor:
        with self._lock:
            if config not in self._parked:
                raise RuntimeError(f"rank {self.rank} holds no state of configuration {config!r}; it holds "
                                   f"{sorted(self._parked)}")
            return self._parked.pop(config)

    def run(self) -> None:
        try:
            while True:
                msg = self.post.get(courier_queue(self.rank))
                if msg.get("stop"):
                    return
                data = self.take(msg["config"])
                dist.send(data, msg["dst"], group=self.group, tag=msg["tag"])
                self.bytes_sent += data.numel()
                self.hops += 1
        except Exception as exc:  # the coordinator stops the job and rank 0 raises it
            self.post.put(EVENTS, {"kind": "error", "worker": self.rank,
                                   "message": f"courier: {type(exc).__name__}: {exc}"})


def receive(size: int, src: int, tag: int, group: dist.ProcessGroup) -> torch.Tensor:
    """The packed state another rank's courier sends (``size`` bytes)."""
    data = torch.empty(size, dtype=torch.uint8)
    dist.recv(data, src, group=group, tag=tag)
    return data
