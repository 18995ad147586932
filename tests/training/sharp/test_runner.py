"""SHARP with real worker processes: every job trains exactly as it would alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlsys.bench.sharp import jobs
from mlsys.training.sharp.runner import Job, train_many, train_sequential
from mlsys.training.spill.spiller import train_resident

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/training/conftest.py


@pytest.fixture(scope="module")
def report():
    todo = jobs(models=3, steps=3, width=64, depth=4, batch=16)
    return todo, train_many(todo, ["cpu", "cpu"], threads=1, export=True)


def test_jobs_train_as_if_alone(report):
    todo, rep = report
    assert [rep.results[j.name].spilled for j in todo] == [True, True, False], "models that fit run unspilled"
    for job in todo:
        recipe = job.recipe()
        model = nn.Sequential(*recipe.layers())
        torch.manual_seed(job.seed)
        losses = train_resident(model, [recipe.batch(s) for s in range(job.steps)], recipe.optimizer, recipe.loss_fn)
        result = rep.results[job.name]
        assert result.losses == pytest.approx(losses, abs=1e-5)
        trained = result.model.state_dict()
        for key, value in model.state_dict().items():
            assert torch.allclose(trained[key], value, atol=1e-5), f"{job.name}: {key}"


def test_timeline_keeps_the_sharp_invariants(report):
    todo, rep = report
    assert len(rep.timeline) == sum(j.steps * (2 * len(rep.results[j.name].shards) - 1) for j in todo)
    for key in ("task", "device"):
        for value in {getattr(s, key) for s in rep.timeline}:
            mine = sorted((s for s in rep.timeline if getattr(s, key) == value), key=lambda s: s.start)
            assert all(a.end <= b.start for a, b in zip(mine, mine[1:])), f"overlap on {key} {value}"
    assert {s.device for s in rep.timeline} == {0, 1}, "both workers took units"
    assert 0.0 <= rep.idle_fraction < 1.0


def test_sequential_baseline_gives_the_same_losses(report):
    todo, rep = report
    seq = train_sequential(todo, "cpu", threads=1)
    for job in todo:
        assert seq["results"][job.name].losses == pytest.approx(rep.results[job.name].losses, abs=1e-5)


def test_bad_jobs():
    with pytest.raises(ValueError, match=r"Job.name='a b'"):
        Job("a b", "x:y")
    with pytest.raises(ValueError, match=r"Job.builder='nope'"):
        Job("a", "nope")
    with pytest.raises(ValueError, match="unique"):
        train_many([Job("a", "x:y"), Job("a", "x:y")], ["cpu"])


class _Payload:
    """Anything pickle can rebuild, e.g. an object whose __reduce__ runs a command."""


def test_step_state_in_shared_memory_is_never_unpickled(tmp_path):
    """Another process writes the step state a worker maps next: weights_only refuses anything but tensors."""
    import pickle

    from mlsys.training.sharp.runner import _Runner

    (tmp_path / "job").mkdir()
    torch.save({"rng": torch.zeros(1), "extra": _Payload()}, tmp_path / "job" / "state-0-1.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        _Runner(tmp_path, "cpu")._take("job", 0, 1, cached=False)
