"""The coordinator's protocol over a real TCPStore, with workers played by this test: who gets which unit, who is
told to send which state where, when a unit must checkpoint, and a stop for everyone at the end."""

from __future__ import annotations

import torch.distributed as dist

from mlsys.training.mop.coordinator import CHECKPOINT, FRESH, Coordinator, Resume
from mlsys.training.mop.courier import EVENTS, Post, courier_queue, work_queue


def _play(epochs: dict, workers: int, resumed=None):
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    post = Post(store)
    coordinator = Coordinator(post.clone(), epochs, workers, seed=3, resumed=resumed)
    coordinator.start()
    work, sends, busy = [], [], {}
    while True:  # every worker takes what it is given and reports it done at once, lowest worker first
        for w in range(workers):
            if w not in busy and store.queue_len(work_queue(w)):
                msg = post.get(work_queue(w))
                if msg.get("stop"):
                    busy[w] = None
                    continue
                work.append((w, msg))
                busy[w] = msg
        running = {w: m for w, m in busy.items() if m is not None}
        if not running and all(w in busy for w in range(workers)):
            break
        if running:
            w = min(running)
            msg = busy.pop(w)
            post.put(EVENTS, {"kind": "unit", "worker": w, "config": msg["config"], "epoch": msg["epoch"],
                              "loss": 0.5, "size": 100 + w, "t0": 0.0, "t1": 0.0, "t2": 0.0})
    coordinator.join(timeout=10)
    for w in range(workers):
        while store.queue_len(courier_queue(w)):
            msg = post.get(courier_queue(w))
            if not msg.get("stop"):
                sends.append((w, msg))
    assert coordinator.error is None
    return coordinator, work, sends


def test_units_hops_and_checkpoints():
    coordinator, work, sends = _play({"a": 2, "b": 1}, workers=2)
    assert len(work) == 6 and sorted(coordinator.visits["a"]) == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert sorted(coordinator.visits["b"]) == [[0, 0], [0, 1]]
    holder = {}
    for w, msg in work:
        c = msg["config"]
        assert msg["src"] == holder.get(c, FRESH), "the state comes from the rank that ran the last unit"
        if isinstance(msg["src"], int) and msg["src"] != w:
            assert (msg["src"], {"config": c, "dst": w, "tag": msg["tag"]}) in sends, "its courier was told"
            assert msg["size"] == 100 + msg["src"]
        holder[c] = w
        ends_epoch = sum(1 for v in coordinator.visits[c] if v[0] == msg["epoch"]) == 2 and \
            [m for _, m in work if m["config"] == c and m["epoch"] == msg["epoch"]][-1] is msg
        assert (msg["checkpoint"] is not None) == ends_epoch
    hops = sum(1 for w, msg in work if isinstance(msg["src"], int) and msg["src"] != w)
    assert len(sends) == hops


def test_a_resumed_configuration_starts_from_its_checkpoint():
    coordinator, work, _ = _play({"a": 2}, workers=2, resumed={"a": Resume(1, [[0, 1], [0, 0]], [0.7, 0.6])})
    assert [m["src"] for _, m in work][0] == CHECKPOINT and [m["epoch"] for _, m in work] == [1, 1]
    assert coordinator.visits["a"][:2] == [[0, 1], [0, 0]] and len(coordinator.losses["a"]) == 4
    last = work[-1][1]["checkpoint"]
    assert last["visits"][:2] == [[0, 1], [0, 0]] and last["losses"][:2] == [0.7, 0.6]
