"""Schema evolution: benign changes propose a diff, a user accepts it, history is kept, nothing changes silently."""

from __future__ import annotations

import json

import pytest

from mlsys import cli
from mlsys.errors import SpecError
from mlsys.storage import DatasetStore
from mlsys.validation.evolution import SchemaRegistry
from mlsys.validation.schema import Schema
from mlsys.validation.stage import ValidateSpec, run


@pytest.fixture
def benign(taxi, tmp_path, mlsys_home):
    path = taxi.schema.save(tmp_path / "taxi.yaml")
    df = taxi.current.copy()
    df.loc[df.index[:5], "payment_type"] = "Mobile"
    df.loc[df.index[5], "fare"] = 720.0
    df.to_csv(tmp_path / "benign.csv", index=False)
    return path, tmp_path / "benign.csv"


def test_benign_changes_propose_an_update_that_a_user_accepts(benign, capsys):
    path, data = benign
    result = run(ValidateSpec(dataset="chicago_taxi", data=str(data), schema=str(path), baseline="none"))
    assert result.success and result.schema_version == 1
    assert {a["severity"] for a in result.anomalies} == {"warning"}
    proposal = result.proposal
    assert proposal["version"] == 2 and len(proposal["reasons"]) == 2
    assert "-  payment_type: {type: string, required: true, domain: [Cash," in proposal["diff"]
    assert "Unknown, Mobile]" in proposal["diff"] and "max: 720.0" in proposal["diff"]
    assert Schema.load(path).version == 1  # never changed silently
    reg = SchemaRegistry.for_file(path)
    assert reg.versions() == [1] and reg.pending().schema.version == 2

    assert cli.main(["schema", "accept", "--schema", str(path)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["version"] == 2 and "+  payment_type" in out
    accepted = Schema.load(path)
    assert accepted.version == 2 and "Mobile" in accepted.columns["payment_type"]["domain"]
    assert accepted.columns["fare"]["max"] == 720.0
    assert reg.versions() == [1, 2] and reg.get(1).columns["fare"]["max"] == 700.07 and reg.pending() is None

    again = run(ValidateSpec(dataset="chicago_taxi", data=str(data), schema=str(path), baseline="none"))
    assert again.success and again.anomalies == [] and again.schema_version == 2 and again.proposal is None
    record = json.loads(DatasetStore().get_bytes(f"validations/chicago_taxi/{again.dataset.version}.json"))
    assert record["schema"]["version"] == 2  # the dataset version records the schema version that validated it
    assert cli.main(["schema", "accept", "--schema", str(path)]) == 2
    assert "no pending proposal" in capsys.readouterr().err


def test_an_edit_without_a_version_bump_is_refused(benign, capsys):
    path, data = benign
    SchemaRegistry.for_file(path).current()  # v1 recorded in the history
    path.write_text(path.read_text().replace("max: 700.07", "max: 800.0"))
    with pytest.raises(SpecError, match=r"(?s)does not match its version: it says version 1.*Bump 'version' to 2"):
        run(ValidateSpec(dataset="chicago_taxi", data=str(data), schema=str(path)))
    path.write_text(path.read_text().replace("version: 1", "version: 2"))
    assert SchemaRegistry.for_file(path).current().version == 2
    assert cli.main(["schema", "show", "--schema", str(path)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["history"] == [1, 2]


def test_accept_through_the_stage_param(benign):
    path, data = benign
    run(ValidateSpec(dataset="chicago_taxi", data=str(data), schema=str(path), baseline="none"))
    result = run(ValidateSpec(dataset="chicago_taxi", data=str(data), schema=str(path), baseline="none",
                              accept_schema_update=True))
    assert result.schema_version == 2 and result.anomalies == []


def test_shipped_schema_is_seeded_into_the_store_registry(mlsys_home):
    reg = SchemaRegistry.open("comments_labeled", DatasetStore())
    assert reg.current() == Schema.load("comments_labeled") and reg.versions() == [1]
    assert reg.uri.endswith("schemas/comments_labeled.yaml")


def test_a_newer_shipped_schema_becomes_a_new_store_version(mlsys_home, tmp_path, monkeypatch):
    import mlsys.validation.evolution as evolution
    import mlsys.validation.schema as schema_mod

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "tiny.yaml").write_text("dataset: tiny\nversion: 1\ncolumns: {x: {type: int}}\n")
    monkeypatch.setattr(schema_mod, "SCHEMA_DIR", shipped)
    monkeypatch.setattr(evolution, "SCHEMA_DIR", shipped)
    store = DatasetStore()
    assert SchemaRegistry.open("tiny", store).current().version == 1
    (shipped / "tiny.yaml").write_text("dataset: tiny\nversion: 2\ncolumns: {x: {type: int, min: 0}}\n")
    reg = SchemaRegistry.open("tiny", store)
    assert reg.current().columns["x"] == {"type": "int", "min": 0} and reg.versions() == [1, 2]
