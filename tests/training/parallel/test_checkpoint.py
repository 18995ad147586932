"""Checkpoints: per-rank files, commit marks the latest, old ones pruned, RNG round trip."""

from __future__ import annotations

import json

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
