"""The MOP coordinator: a thread on rank 0 that drives the randomized scheduler with the workers' real events.

    loop until every configuration has trained its epochs:
        assign: each idle worker w gets a random runnable configuration c (``Scheduler.assign``)
                work/w      <- {c, epoch, src: the rank holding c's state | "fresh" | "checkpoint", tag, size}
                courier/src <- {c, dst: w, tag}             (when c's state is on another rank)
        wait:   events      -> {worker, c, loss, size, t0, t1, t2}   (a unit ended; w is idle again)
    then:       work/*, courier/* <- stop

It keeps each configuration's visit log (epoch, partition) and unit losses; the worker that ends an
epoch of c checkpoints c's state with the log up to there, so a restarted job resumes every
configuration at its last finished epoch (``Resume``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from mlsys.training.mop.courier import EVENTS, STOP, Post, courier_queue, work_queue
from mlsys.training.mop.scheduler import Scheduler, Visit

FRESH, CHECKPOINT = "fresh", "checkpoint"


@dataclass
class Resume:
    """Where a configuration restarts: epochs finished, with the visit log and unit losses up to there."""

    done: int = 0
    visits: list[list[int]] = field(default_factory=list)  # [epoch, partition] per unit, in order
    losses: list[float] = field(default_factory=list)  # each unit's mean loss


class Coordinator(threading.Thread):
    def __init__(self, post: Post, epochs: dict[str, int], workers: int, seed: int,
                 resumed: dict[str, Resume] | None = None, on_unit: Callable[[dict], None] | None = None):
        super().__init__(name="mop-coordinator", daemon=True)
        self.post, self.workers, self.on_unit = post, workers, on_unit
        self.resumed = resumed or {}
        self.sched = Scheduler(epochs, workers, seed, done={c: r.done for c, r in self.resumed.items()})
        self.visits = {c: list(self.resumed.get(c, Resume()).visits) for c in epochs}
        self.losses = {c: list(self.resumed.get(c, Resume()).losses) for c in epochs}
        self.timeline: list[Visit] = []  # this run's units, seconds from the start
        self.waits: list[float] = []  # per unit: seconds from its assignment until the state was in hand
        self.error: BaseException | None = None
        self.start_time = time.time()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # rank 0's main thread raises it once it sees the stop
            self.error = exc
        finally:
            for w in range(self.workers):
                self.post.put(work_queue(w), STOP)
                self.post.put(courier_queue(w), STOP)

    def _run(self) -> None:
        sched = self.sched
        holder: dict[str, int | str] = {c: CHECKPOINT if r.done else FRESH for c, r in self.resumed.items()}
        size: dict[str, int] = {}
        idle, tag = set(range(self.workers)), 0
        assigned_at: dict[int, float] = {}
        self.start_time = time.time()
        while not sched.finished:
            for w, c in sched.assign(idle):
                idle.discard(w)
                tag += 1
                src = holder.get(c, FRESH)
                last = len(sched.state[c].visited) == self.workers - 1  # this unit ends c's epoch
                if isinstance(src, int) and src != w:
                    self.post.put(courier_queue(src), {"config": c, "dst": w, "tag": tag})
                self.post.put(work_queue(w), {
                    "config": c, "epoch": sched.epoch_of(c), "src": src, "tag": tag, "size": size.get(c, 0),
                    "checkpoint": {"visits": self.visits[c], "losses": self.losses[c]} if last else None})
                assigned_at[w] = time.time()
            event = self.post.get(EVENTS)
            if event["kind"] == "error":
                raise RuntimeError(f"rank {event['worker']} failed: {event['message']}")
            w = event["worker"]
            c, _ = sched.complete(w)
            if c != event["config"]:
                raise RuntimeError(f"worker {w} reported {event['config']!r} but was running {c!r}")
            holder[c], size[c] = w, event["size"]
            idle.add(w)
            self.visits[c].append([event["epoch"], w])
            self.losses[c].append(event["loss"])
            self.timeline.append(Visit(c, event["epoch"], w, w, event["t1"] - self.start_time,
                                       event["t2"] - self.start_time))
            self.waits.append(max(0.0, event["t1"] - assigned_at.pop(w)))
            if self.on_unit:
                self.on_unit({**event, "units_done": len(self.timeline)})
