"""The CLI: mlsys stats, mlsys schema infer, mlsys validate (exit 0 / 1 / 2, JSON report), bad input."""

from __future__ import annotations

import json

import pytest

from mlsys import cli


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture
def files(taxi, tmp_path, mlsys_home, capsys):
    schema = tmp_path / "taxi.yaml"
    taxi.full.to_csv(tmp_path / "full.csv", index=False)
    assert cli.main(["schema", "infer", "--data", str(tmp_path / "full.csv"), "--out", str(schema),
                     "--dataset", "chicago_taxi", "--label", "tips"]) == 0
    assert _last_json(capsys.readouterr().out) == {"schema": str(schema), "dataset": "chicago_taxi", "version": 1,
                                                   "columns": 18}
    return schema, taxi.root, tmp_path


def test_stats_command(taxi, tmp_path, capsys):
    assert cli.main(["stats", "--data", str(taxi.root / "current.csv"), "--out", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "payment_type" in out and _last_json(out)["rows"] == len(taxi.current)
    assert json.loads((tmp_path / "s.json").read_text())["columns"]["fare"]["type"] == "float"


def test_validate_exit_codes_and_report(files, taxi, capsys):
    schema, root, tmp = files
    report = tmp / "report.json"
    base = ["validate", "--dataset", "chicago_taxi", "--schema", str(schema), "--report", str(report)]
    # a clean span, with drift checked against the previous span
    code = cli.main(base + ["--data", str(root / "current.csv"), "--baseline", str(root / "previous.csv")])
    rep = json.loads(report.read_text())
    assert code == 0 and rep["success"] and rep["anomalies"] == [], rep["anomalies"]
    assert rep["schema"]["version"] == 1 and rep["baseline"] == str(root / "previous.csv")

    bad = taxi.current.copy()
    bad.loc[bad.sample(frac=0.3, random_state=1).index, "payment_type"] = "Crypto"
    bad.to_csv(tmp / "bad.csv", index=False)
    assert cli.main(base + ["--data", str(tmp / "bad.csv"), "--baseline", str(root / "previous.csv")]) == 1
    assert "unexpected_values(payment_type)" in capsys.readouterr().err
    rep = json.loads(report.read_text())
    assert not rep["success"]
    kinds = {(a["type"], a["column"], a["severity"]) for a in rep["anomalies"]}
    assert {("unexpected_values", "payment_type", "error"), ("drift", "payment_type", "error")} <= kinds
    for a in rep["anomalies"]:
        assert {"type", "column", "severity", "observed", "expected", "description"} <= set(a)

    serving = taxi.current.drop(columns=["tips"])
    serving.to_csv(tmp / "serving.csv", index=False)
    assert cli.main(base + ["--data", str(tmp / "serving.csv"), "--environment", "serving"]) == 0
    assert json.loads(report.read_text())["environment"] == "serving"
    # (the same file as training data is a missing_column error: tests/validation/test_anomalies.py)


def test_bad_input_gives_clear_errors(files, taxi, capsys):
    schema, root, tmp = files
    (tmp / "empty.csv").write_text("")
    base = ["validate", "--dataset", "chicago_taxi", "--schema", str(schema)]
    assert cli.main(base + ["--data", str(tmp / "empty.csv")]) == 2
    assert "is empty (0 bytes)" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(tmp / "missing.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp / "broken.yaml").write_text("dataset: chicago_taxi\ncolumns: {fare: [\n")
    assert cli.main(["validate", "--data", str(root / "current.csv"), "--schema", str(tmp / "broken.yaml")]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    (tmp / "future.yaml").write_text("format: 9\ndataset: chicago_taxi\ncolumns: {}\n")
    assert cli.main(["validate", "--data", str(root / "current.csv"), "--schema", str(tmp / "future.yaml")]) == 2
    assert "has format 9" in capsys.readouterr().err
    assert cli.main(["validate", "--data", str(root / "current.csv")]) == 2
    assert "a data file needs its schema" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(root / "current.csv"), "--environment", "prod"]) == 2
    assert "ValidateSpec.environment='prod'" in capsys.readouterr().err
    # a column of mixed types: an error anomaly naming it, never a pass
    mixed = taxi.current.copy()
    mixed["fare"] = mixed["fare"].astype(str)
    mixed.loc[mixed.index[:10], "fare"] = "about ten"
    mixed.to_csv(tmp / "mixed.csv", index=False)
    assert cli.main(base + ["--data", str(tmp / "mixed.csv"), "--baseline", "none"]) == 1
    assert "type_mismatch(fare)" in capsys.readouterr().err
    assert cli.main(["schema", "infer", "--data", str(tmp / "mixed.csv"), "--out", str(tmp / "m.yaml")]) == 2
    assert "column 'fare' mixes types" in capsys.readouterr().err
    assert cli.main(["schema", "infer", "--data", str(root / "current.csv"), "--out", str(schema)]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli.main(["stats", "--data", str(tmp / "empty.csv")]) == 2


def test_bench_stats_smoke(taxi, capsys):
    assert cli.main(["bench", "stats", "--rows", "3000", "--repeat", "1"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert {"rows", "columns", "ours_s", "gx_s", "speedup"} <= set(result)
    assert result["rows"] == 3000 and result["columns"] == 18 and result["agree"] is True
