"""Checkpoints: per-rank files, commit marks the latest, old ones pruned (local and S3), no temporary file left,
nothing but tensors and plain data loaded back (weights_only), RNG round trip."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from mlsys.training.parallel.checkpoint import Checkpointer, rng_state, set_rng_state


def test_save_commit_load(tmp_path):
    uri = str(tmp_path / "ckpt")
    r0, r1 = Checkpointer(uri, 0), Checkpointer(uri, 1)
    assert r0.latest() is None
    for step in (5, 10, 15):
        r0.save(step, {"w": torch.full((2,), float(step)), "step": step})
        r1.save(step, {"w": torch.full((2,), -float(step)), "step": step})
        if step < 15:
            r0.commit(step)
    assert r0.latest() == r1.latest() == 10  # step 15 saved but never committed: it does not count
    assert torch.equal(r1.load(10)["w"], torch.tensor([-10.0, -10.0]))
    r0.commit(15)
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text()) == {"step": 15}
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step-*")) == ["step-00000010", "step-00000015"]
    assert not list((tmp_path / "ckpt").rglob(".tmp-*"))


def test_rng_state_round_trip():
    state = rng_state(torch.device("cpu"))
    a = torch.rand(3)
    set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(3), a)


def test_needs_a_location():
    with pytest.raises(ValueError, match="uri='' is invalid"):
        Checkpointer("")


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    uri = tmp_path / "ckpt"
    ckpt = Checkpointer(str(uri), 0)
    ckpt.save(1, {"w": torch.ones(2)})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save(2, {"w": torch.ones(2)})
    with pytest.raises(OSError, match="No space left"):
        ckpt.commit(1)
    monkeypatch.undo()
    assert not list(uri.rglob(".tmp-*"))
    assert ckpt.latest() is None and not (uri / "step-00000002" / "rank-0.pt").exists()


def test_a_commit_sweeps_what_a_killed_writer_left(tmp_path):
    uri = tmp_path / "ckpt"
    ckpt = Checkpointer(str(uri), 0)
    ckpt.save(1, {"w": torch.ones(2)})
    (uri / ".tmp-killed").write_bytes(b"half a latest.json")
    (uri / "step-00000001" / ".tmp-killed").write_bytes(b"half a rank file")
    ckpt.commit(1)
    assert not list(uri.rglob(".tmp-*")) and ckpt.latest() == 1


def test_s3_checkpoints_are_pruned_like_local_ones(s3_root):
    import boto3

    uri = f"{s3_root}/checkpoints/run-1"
    r0, r1 = Checkpointer(uri, 0), Checkpointer(uri, 1)
    for step in (5, 10, 15):
        r0.save(step, {"w": torch.full((2,), float(step))})
        r1.save(step, {"w": torch.full((2,), -float(step))})
        r0.commit(step)
    bucket, prefix = s3_root.removeprefix("s3://").split("/", 1)
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/checkpoints/run-1/")
    keys = sorted(o["Key"].rsplit("run-1/", 1)[1] for o in listed.get("Contents", []))
    assert keys == ["latest.json", "step-00000010/rank-0.pt", "step-00000010/rank-1.pt",
                    "step-00000015/rank-0.pt", "step-00000015/rank-1.pt"]
    assert r1.latest() == 15 and torch.equal(r1.load(15)["w"], torch.tensor([-15.0, -15.0]))


class Payload:
    """Anything pickle can rebuild, e.g. an object whose __reduce__ runs a command."""

    def __init__(self, note: str):
        self.note = note


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    import io

    uri = tmp_path / "ckpt"
    (uri / "step-00000001").mkdir(parents=True)
    buf = io.BytesIO()
    torch.save({"w": torch.ones(1), "extra": Payload("from shared storage")}, buf)
    (uri / "step-00000001" / "rank-0.pt").write_bytes(buf.getvalue())
    (uri / "latest.json").write_text('{"step": 1}')
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        Checkpointer(str(uri), 0).load(1)


def test_save_takes_only_what_loads_back_safely(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "ckpt"), 0)
    with pytest.raises(TypeError, match=r"checkpoint state\['extra'\]\[1\] is a Payload.*JSON form"):
        ckpt.save(1, {"w": torch.ones(1), "extra": [1, Payload("x")]})
    assert not (tmp_path / "ckpt" / "step-00000001").exists()


def test_a_real_training_state_round_trips_with_weights_only(tmp_path):
    """Model, AdamW state (betas tuple, step tensors), RNG and plain bookkeeping: what job.py stores."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(torch.device("cpu")),
             "step": 7, "epoch_acc": {"total": 1.5, "seen": 3, "wall": 0.1}, "history": [{"train_loss": 0.5}],
             "balance": None}
    ckpt = Checkpointer(str(tmp_path / "ckpt"), 0)
    ckpt.save(7, state)
    back = ckpt.load(7)
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    assert back["history"] == state["history"] and back["epoch_acc"] == state["epoch_acc"]
    opt.load_state_dict(back["optimizer"])


def test_a_commit_never_prunes_a_newer_step_being_saved(tmp_path):
    uri = tmp_path / "ckpt"
    r0, r1 = Checkpointer(str(uri), 0), Checkpointer(str(uri), 1)
    for step in (5, 10):
        r0.save(step, {"w": torch.ones(1)})
        r0.commit(step)
    r1.save(15, {"w": torch.ones(1)})  # a rank already past the barrier, saving the next checkpoint
    r0.save(12, {"w": torch.ones(1)})
    r0.commit(12)
    assert sorted(p.name for p in uri.glob("step-*")) == ["step-00000010", "step-00000012", "step-00000015"]
