"""MOP on torchrun (2 ranks, gloo): every configuration equals sequential training over the partitions in the
order it visited them, for SGD and Adam, resident and spilled; a rank killed after an epoch's checkpoint is
resumed from there."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mlsys.errors import SpecError
from mlsys.faults import fired
from mlsys.training.mop import partition
from mlsys.training.mop.hopper import train_mop
from mlsys.training.mop.scheduler import check
from mlsys.training.parallel.launcher import LaunchError, parse_event


def _models(configs):
    spilled = [dataclasses.replace(m, name=f"{m.name}-spilled") for m in configs(budget_mb=0.25)]
    return configs() + spilled


def test_mop_equals_sequential_training_in_the_visit_order(tmp_path, parts, configs, plain, max_diff, one_thread):
    partition.write(parts, str(tmp_path / "parts"))
    models = _models(configs)
    report = train_mop(models, str(tmp_path / "parts"), str(tmp_path / "ckpt"), workers=2, seed=5)
    epochs = {m.name: m.epochs for m in models}
    check(report.timeline, epochs, 2)  # each partition once per epoch, no overlaps, one unit per worker
    for m in models:
        visits = report.visits[m.name]
        assert sorted(visits) == [(0, 0), (0, 1), (1, 0), (1, 1)], visits
        assert max_diff(report.weights[m.name], plain(m, parts, visits)) <= 1e-5, m.name
        assert (len(report.shards[m.name]) > 1) == m.name.endswith("spilled")
    assert report.data_bytes == [partition.nbytes(p) for p in parts], "each worker holds its partition only"
    assert report.hops >= len(models) and report.bytes_sent > 0


def test_a_rank_killed_after_an_epoch_resumes_there(tmp_path, monkeypatch, parts, configs, plain, max_diff, one_thread):
    partition.write(parts, str(tmp_path / "parts"))
    models = configs(epochs=3)
    args = (models, str(tmp_path / "parts"), str(tmp_path / "ckpt"), 2)
    env = {"MLSYS_HOME": str(tmp_path / "home"), "MLSYS_FAILPOINTS": "mop.epoch_checkpointed=1"}
    monkeypatch.setenv("MLSYS_HOME", env["MLSYS_HOME"])
    with pytest.raises(LaunchError):  # a rank SIGKILLed itself right after committing an epoch; the job failed
        train_mop(*args, workdir=tmp_path / "work", env=env)
    assert fired("mop.epoch_checkpointed") == 1
    committed = {m.name: json.loads((tmp_path / "ckpt" / m.name / "latest.json").read_text())["step"]
                 for m in models if (tmp_path / "ckpt" / m.name / "latest.json").exists()}
    assert committed and all(1 <= e < 3 for e in committed.values()), committed
    assert not (tmp_path / "work" / "result.pt").exists()

    events = []
    report = train_mop(*args, workdir=tmp_path / "work", env=env, on_line=lambda line: events.append(parse_event(line)))
    resumed = [e for e in events if e and e["kind"] == "resumed"]
    assert resumed and {c: n for c, n in resumed[0]["epochs"].items()} == committed
    units = [e for e in events if e and e["kind"] == "unit"]
    redo = sum(2 * (m.epochs - committed.get(m.name, 0)) for m in models)
    assert len(units) == redo, "finished epochs are not redone"
    for m in models:
        assert len(report.visits[m.name]) == 2 * m.epochs
        assert max_diff(report.weights[m.name], plain(m, parts, report.visits[m.name])) <= 1e-5, m.name


def test_bad_input_fails_before_any_process_starts(tmp_path, parts, configs):
    partition.write(parts, str(tmp_path / "parts"))
    with pytest.raises(SpecError, match=r"train_mop\.workers=3 is invalid: .* holds 2 partitions"):
        train_mop(configs(), str(tmp_path / "parts"), str(tmp_path / "ckpt"), workers=3)
    with pytest.raises(SpecError, match=r"train_mop\.data_uri=.* write the partitions there first"):
        train_mop(configs(), str(tmp_path / "none"), str(tmp_path / "ckpt"), workers=2)
    with pytest.raises(SpecError, match=r"MopConfig\.models=\['sgd', 'sgd'\] is invalid: give every configuration"):
        train_mop(configs()[:1] * 2, str(tmp_path / "parts"), str(tmp_path / "ckpt"), workers=2)
