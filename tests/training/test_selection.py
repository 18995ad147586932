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


@pytest.fixture(scope="module")
def selected(prepared_home):
    """ingest -> label -> select (3 candidates, SHARP on 2 workers) -> evaluate."""
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
        client = mlflow.MlflowClient(f"sqlite:///{env.home / 'mlflow.db'}")
        yield result, gate, client, client.get_run(active.info.run_id)


def test_every_candidate_is_a_nested_run_with_its_curve(selected):
    result, _, client, parent = selected
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
    result, gate, client, parent = selected
    best = max(result.candidates, key=lambda c: c["val"]["f1"])
    assert result.best == best["name"] and parent.data.params["best"] == best["name"]
    assert parent.data.metrics["best_val_f1"] == pytest.approx(best["val"]["f1"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"model_selection.png", "model_selection.json"} <= artifacts
    assert gate.version == "1" and gate.promoted, "the first challenger becomes champion"
    assert str(client.get_model_version_by_alias("select-test", "challenger").version) == "1"
    assert json.loads(json.dumps(result.to_json()))["best"] == result.best
