"""Model selection: grids checked before training; candidates trained with SHARP, tracked, the best gated."""

from __future__ import annotations

import json

import pytest

from mlsys.errors import SpecError
from mlsys.training.selection import SelectionSpec, candidate_name, defaults, expand


def test_a_grid_is_the_cross_product_and_a_list_is_taken_as_given():
    grid = expand('{"lr": [0.001, 0.01], "dim": [16, 32, 64]}')
    assert len(grid) == 6 and {(c["lr"], c["dim"]) for c in grid} == {(a, b) for a in (0.001, 0.01) for b in (16, 32, 64)}
    assert all(c["depth"] == defaults()["depth"] for c in grid), "unset keys take the defaults"
    listed = expand([{"lr": 1, "optimizer": "sgd"}, {"depth": 0}])
    assert listed[0]["lr"] == 1.0 and listed[0]["optimizer"] == "sgd" and listed[1]["depth"] == 0
    assert candidate_name(3, listed[0]).startswith("c03-")


@pytest.mark.parametrize("grid, message", [
    ('{"lr": [0.01, -1]}', r"SelectionSpec\.grid\[1\]\.lr=-1.0 is invalid: use a positive learning rate"),
    ('{"dimm": [32]}', r"SelectionSpec\.grid\[0\]\.dimm=32 is invalid: a configuration may set"),
    ('[{"depth": 1.5}]', r"SelectionSpec\.grid\[0\]\.depth=1.5 is invalid"),
    ('[{"optimizer": "lbfgs"}]', r"SelectionSpec\.grid\[0\]\.optimizer='lbfgs' is invalid"),
    ('{"lr": 0.01}', r"SelectionSpec\.grid\.lr=0.01 is invalid: give a non-empty list"),
    ('{"lr": [0.01]', r"not valid JSON"),
    ("[]", r"grid=\[\] is invalid"),
])
def test_an_invalid_grid_names_the_key_before_anything_trains(grid, message):
    with pytest.raises(SpecError, match=message):
        SelectionSpec(grid=grid)


def test_bad_spec_fields():
    with pytest.raises(SpecError, match=r"SelectionSpec.metric='auc'"):
        SelectionSpec(metric="auc")
    with pytest.raises(SpecError, match=r"SelectionSpec.workers=0"):
        SelectionSpec(workers=0)
    with pytest.raises(SpecError, match=r"SelectionSpec.mode='hogwild' is invalid: use one of \['sharp', 'mapped', 'mop"):
        SelectionSpec(mode="hogwild")


def test_mop_needs_a_device_per_worker(monkeypatch):
    monkeypatch.setenv("MLSYS_CPU_DEVICES", "2")
    with pytest.raises(SpecError, match=r"SelectionSpec.workers=3 is invalid: mop runs one rank per device"):
        SelectionSpec(mode="mop", workers=3)
    assert SelectionSpec(mode="sharp", workers=3).workers == 3, "SHARP shares devices"


@pytest.fixture(scope="module")
def selected(prepared_home):
    """ingest -> label -> select (3 candidates, SHARP on 2 workers) -> evaluate; then the same grid with MOP
    (2 ranks, one partition each; the largest candidate spilled and hopping) -> evaluate."""
    import mlflow

    from mlsys.registry.stage import EvaluateSpec
    from mlsys.registry.stage import run as evaluate
    from mlsys.tracking import RunContext, stage_run
    from mlsys.training.selection import run

    with prepared_home("select-home", tracked=True, model_name="select-test") as env:
        labeled = env.labeled.labeled  # validation is another stage's test: the version is named
        grid = json.dumps([{"lr": 0.01, "dim": 128, "depth": 3, "epochs": 2, "batch_size": 256},
                           {"lr": 0.003, "dim": 16, "depth": 1, "epochs": 2, "batch_size": 256},
                           {"lr": 0.0001, "dim": 8, "depth": 0, "epochs": 1, "batch_size": 256, "optimizer": "sgd"}])
        with stage_run(RunContext.cli("select")) as active:
            result = run(SelectionSpec(grid=grid, dataset_version=labeled.version, num_buckets=1024, workers=2,
                                       budget_mb=30.0))
        with stage_run(RunContext.cli("evaluate")):
            gate = evaluate(EvaluateSpec(model_uri=result.model_uri))
        with stage_run(RunContext.cli("select")) as mop_active:
            mop = run(SelectionSpec(grid=grid, dataset_version=labeled.version, num_buckets=1024, workers=2,
                                    budget_mb=30.0, mode="mop"))
        with stage_run(RunContext.cli("evaluate")):
            mop_gate = evaluate(EvaluateSpec(model_uri=mop.model_uri))
        client = mlflow.MlflowClient(f"sqlite:///{env.home / 'mlflow.db'}")
        mop_run = client.get_run(mop_active.info.run_id)
        yield result, gate, client, client.get_run(active.info.run_id), (mop, mop_gate, mop_run)


def test_every_candidate_is_a_nested_run_with_its_curve(selected):
    result, _, client, parent, _ = selected
    assert len(result.candidates) == 3
    for cand in result.candidates:
        run = client.get_run(cand["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["lr"] == str(cand["config"]["lr"])
        curve = client.get_metric_history(cand["run_id"], "train_loss")
        assert len(curve) == cand["config"]["epochs"]
        assert 0.0 <= run.data.metrics["val_f1"] <= 1.0
    assert any(c["spilled"] for c in result.candidates), "budget_mb spills the largest candidate"
    assert not all(c["spilled"] for c in result.candidates)


def test_the_best_on_validation_is_logged_and_gated(selected):
    result, gate, client, parent, _ = selected
    best = max(result.candidates, key=lambda c: c["val"]["f1"])
    assert result.best == best["name"] and parent.data.params["best"] == best["name"]
    assert parent.data.metrics["best_val_f1"] == pytest.approx(best["val"]["f1"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"model_selection.png", "model_selection.json"} <= artifacts
    assert gate.version == "1" and gate.promoted, "the first challenger becomes champion"
    assert client.get_model_version("select-test", "1").run_id == parent.info.run_id
    assert json.loads(json.dumps(result.to_json()))["best"] == result.best


def test_mop_mode_tracks_and_gates_the_same_way(selected):
    result, _, client, _, (mop, gate, parent) = selected
    assert [c["name"] for c in mop.candidates] == [c["name"] for c in result.candidates]
    assert parent.data.params["mode"] == "mop" and parent.data.params["best"] == mop.best
    for cand in mop.candidates:
        run = client.get_run(cand["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        units = client.get_metric_history(cand["run_id"], "train_loss_unit")
        assert len(units) == 2 * cand["config"]["epochs"], "one unit per partition per epoch"
        assert len(client.get_metric_history(cand["run_id"], "train_loss")) == cand["config"]["epochs"]
    assert [c["spilled"] for c in mop.candidates] == [c["spilled"] for c in result.candidates], "spilled ones hop too"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"model_selection.png", "model_selection.json", "mop_schedule.png", "mop_visits.json"} <= artifacts
    visits = json.loads(open(client.download_artifacts(parent.info.run_id, "mop_visits.json")).read())["visits"]
    for cand in mop.candidates:
        epochs = range(cand["config"]["epochs"])
        per_epoch = [sorted(p for e, p in visits[cand["name"]] if e == epoch) for epoch in epochs]
        assert per_epoch == [[0, 1]] * cand["config"]["epochs"]
    assert parent.data.metrics["mop_bytes_sent"] > 0 and parent.data.metrics["mop_data_bytes_per_worker"] > 0
    assert gate.version == "2", "the MOP winner is registered as the next challenger and gated against champion"
    assert str(client.get_model_version_by_alias("select-test", "challenger").version) == "2"
