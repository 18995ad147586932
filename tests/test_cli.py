"""The ``mlsys`` console script: every stage is a subcommand; results print as JSON; bad values fail loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlsys import stages

MLSYS = Path(sys.executable).parent / "mlsys"


def _mlsys(*args: str, home: Path, data_dir: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, MLSYS_HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true")
    if data_dir is not None:
        env["MLSYS_DATA_DIR"] = str(data_dir)
    for var in ("MLSYS_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLSYS_ARTIFACT_URI"):
        env.pop(var, None)
    return subprocess.run([str(MLSYS), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_console_script_is_installed():
    assert MLSYS.is_file(), f"{MLSYS} missing: install the package (pip install -e .)"


def test_help_lists_every_stage(mlsys_home):
    proc = _mlsys("--help", home=mlsys_home)
    assert proc.returncode == 0, proc.stderr
    for name in [*stages.STAGES, "demo", "up"]:
        assert name in proc.stdout
    flat = " ".join(proc.stdout.split())  # argparse wraps long help lines
    for stage in stages.STAGES.values():
        assert " ".join(stage.help.split()) in flat


def test_stage_help_lists_its_spec_fields(mlsys_home):
    proc = _mlsys("ingest", "--help", home=mlsys_home)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--gold-size", "--test-group", "--id-column", "--storage-uri"):
        assert flag in proc.stdout


def test_ingest_prints_json_with_versions(mlsys_home, data_dir):
    proc = _mlsys("ingest", "--gold-size", "50", home=mlsys_home, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["gold"]["rows"] == 50
    for split in ("unlabeled", "gold", "test"):
        version = result[split]["version"]
        assert len(version) == 16
        assert (mlsys_home / "storage" / "datasets" / f"comments_{split}" / version / "data.parquet").is_file()
    # and the run is tracked in MLflow under $MLSYS_HOME
    assert (mlsys_home / "mlflow.db").is_file()
    assert result["gold"]["created_by"]["mlflow_run_id"]


def test_bad_value_exits_non_zero_naming_the_field(mlsys_home):
    proc = _mlsys("ingest", "--gold-size", "3", home=mlsys_home)
    assert proc.returncode != 0
    assert "IngestSpec.gold_size=3 is invalid" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_unknown_command_and_bad_type_are_usage_errors(mlsys_home):
    proc = _mlsys("fly", home=mlsys_home)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = _mlsys("ingest", "--gold-size", "many", home=mlsys_home)
    assert proc.returncode == 2 and "--gold-size" in proc.stderr


def test_main_in_process(mlsys_home, data_dir, capsys):
    from mlsys.cli import main

    assert main(["ingest", "--gold-size", "20", "--source", str(data_dir / "youtube-spam")]) == 0
    assert json.loads(capsys.readouterr().out)["gold"]["rows"] == 20
    with pytest.raises(SystemExit):
        main([])
