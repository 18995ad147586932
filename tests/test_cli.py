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


# -- mlsys datasets ------------------------------------------------------------------


@pytest.fixture
def datasets_home(mlsys_home):
    """Two ingests (a snapshot each) and a labeled dataset with two versions, the first validated."""
    import pandas as pd

    from mlsys.storage import DatasetStore

    store = DatasetStore()

    def frame(seed):
        return pd.DataFrame({"id": [f"{seed}-{i}" for i in range(3)], "text": ["a", "b", "c"]})

    snaps = [store.write_snapshot("comments", {"comments_unlabeled": frame(s), "comments_test": frame(s + 10)},
                                  created_by={"mlflow_run_id": f"ingest-run-{s}"}) for s in (1, 2)]
    old = store.write("comments_labeled", frame(3), created_by={"mlflow_run_id": "label-run-1"},
                      sources={"comments_unlabeled": snaps[0].members["comments_unlabeled"]})
    new = store.write("comments_labeled", frame(4), created_by={"mlflow_run_id": "label-run-2"})
    store.tag("comments_labeled", old.version, "validated")
    return {"store": store, "snaps": snaps, "old": old, "new": new}


def _datasets(capsys, *args: str) -> tuple[int, str, str]:
    from mlsys.cli import main

    code = main(["datasets", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_datasets_list(datasets_home, capsys):
    code, out, _ = _datasets(capsys, "list", "--json")
    assert code == 0
    data = json.loads(out)
    by_name = {d["name"]: d for d in data["datasets"]}
    assert set(by_name) == {"comments_unlabeled", "comments_test", "comments_labeled"}
    labeled = by_name["comments_labeled"]
    assert labeled["versions"] == 2
    assert labeled["pointers"]["latest"] == {"version": datasets_home["new"].version, "sequence": 2}
    assert labeled["pointers"]["validated"] == {"version": datasets_home["old"].version, "sequence": 1}
    assert data["snapshot_series"] == [{"name": "comments", "snapshots": 2,
                                        "latest": {"version": datasets_home["snaps"][1].id, "sequence": 2}}]
    code, out, _ = _datasets(capsys, "list")
    assert code == 0 and "comments_labeled" in out and f"{datasets_home['new'].version} (2)" in out


def test_datasets_history(datasets_home, capsys):
    code, out, _ = _datasets(capsys, "history", "comments_labeled", "--json")
    assert code == 0
    data = json.loads(out)
    assert [(v["sequence"], v["version"], v["written_by"], v["pointers"]) for v in data["versions"]] == [
        (1, datasets_home["old"].version, "label-run-1", ["validated"]),
        (2, datasets_home["new"].version, "label-run-2", ["latest"]),
    ]
    assert [(m["pointer"], m["from_version"], m["version"], m["writer"]) for m in data["moves"]] == [
        ("latest", None, datasets_home["old"].version, "label-run-1"),
        ("validated", None, datasets_home["old"].version, data["moves"][1]["writer"]),
        ("latest", datasets_home["old"].version, datasets_home["new"].version, "label-run-2"),
    ]
    assert data["moves"][1]["writer"].startswith("cli (")
    code, out, _ = _datasets(capsys, "history", "comments")  # a snapshot series
    assert code == 0 and "snapshot comments: 2 versions, 2 pointer moves" in out and "ingest-run-2" in out


def test_datasets_show(datasets_home, capsys):
    snaps, old, new = (datasets_home[k] for k in ("snaps", "old", "new"))
    for ref, expected in (("latest", new), ("validated", old), (old.version, old)):
        code, out, _ = _datasets(capsys, "show", f"comments_labeled@{ref}", "--json")
        assert code == 0 and json.loads(out)["version"] == expected.version
    assert json.loads(_datasets(capsys, "show", "comments_labeled@validated", "--json")[1])["snapshot_of"] == snaps[0].id
    code, out, _ = _datasets(capsys, "show", f"comments_test@{snaps[0].id}", "--json")  # a snapshot id
    assert code == 0 and json.loads(out)["version"] == snaps[0].members["comments_test"]
    code, out, _ = _datasets(capsys, "show", "comments@latest", "--json")
    data = json.loads(out)
    assert data["kind"] == "snapshot" and data["id"] == snaps[1].id and data["pointers"] == ["latest"]
    assert data["datasets"]["comments_test"]["version"] == snaps[1].members["comments_test"]
    code, out, _ = _datasets(capsys, "show", "comments_labeled")
    assert code == 0 and f"comments_labeled@{new.version}  (sequence 2; pointers: latest)" in out


@pytest.mark.parametrize("args, message", [
    (("show", "nothing@latest"), "no dataset or snapshot series 'nothing'"),
    (("show", "comments_labeled@0000000000000000"), "has no version '0000000000000000'"),
    (("show", "comments_labeled@../x"), "is not valid"),
    (("history", "bad name"), "is not valid"),
])
def test_datasets_errors_exit_2(datasets_home, capsys, args, message):
    code, out, err = _datasets(capsys, *args)
    assert code == 2 and out == "" and err.startswith("mlsys datasets: ") and message in err


def test_datasets_console_script(mlsys_home):
    proc = _mlsys("datasets", "list", home=mlsys_home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("datasets under")
    proc = _mlsys("datasets", "history", "ghost", home=mlsys_home)
    assert proc.returncode == 2 and proc.stderr.startswith("mlsys datasets: no dataset or snapshot series 'ghost'")
