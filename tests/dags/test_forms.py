"""Trigger forms are generated from the specs: every form submits with its defaults, refuses what its spec refuses,
and shows the spec's default, bounds and help (one source of truth)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))

# For each DAG file: the params as the form sees them, whether they validate with their defaults (what the UI's
# Trigger button needs), and what a bad value does.
PROBE = r"""
import json, runpy, sys
from airflow.sdk import DAG
from airflow.sdk.definitions.param import ParamsDict
ns = runpy.run_path(sys.argv[1])
(dag,) = [o for o in ns.values() if isinstance(o, DAG)]
out = {"dag_id": dag.dag_id, "schemas": {k: dag.params.get_param(k).schema for k in dag.params},
       "help": {k: dag.params.get_param(k).description for k in dag.params},
       "defaults": dag.params.dump()}
try:
    dag.params.validate()
    out["defaults_ok"] = True
except Exception as exc:
    out["defaults_ok"] = repr(exc)
bad = json.loads(sys.argv[2])
out["bad"] = {}
for key, value in bad.items():
    if key in dag.params:
        params = ParamsDict({k: dag.params.get_param(k) for k in dag.params})
        try:
            params[key] = value
            params.validate()
            out["bad"][key] = None
        except Exception as exc:
            out["bad"][key] = str(exc)
print(json.dumps(out, default=str))
"""

BAD = {"epochs": 0, "gold_size": 3, "strategy": "zero", "workers": -1, "width": 0, "val_fraction": 1.5}


def _form(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), json.dumps(BAD)], capture_output=True, text=True,
                         timeout=120, env={"AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONWARNINGS": "ignore",
                                           "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


FORMS = {p.stem: p for p in DAG_FILES}


@pytest.fixture(scope="module")
def forms() -> dict[str, dict]:
    return {name: _form(path) for name, path in FORMS.items()}


def test_every_form_submits_with_its_defaults(forms):
    assert {name: form["defaults_ok"] for name, form in forms.items()} == {name: True for name in forms}


def test_an_empty_text_field_is_optional(forms):
    for dag_id, key in (("mlsys_data", "source"), ("mlsys_training", "balance")):
        schema = forms[dag_id]["schemas"][key]
        assert forms[dag_id]["defaults"][key] is None and "null" in schema["type"], (dag_id, key, schema)


def test_a_bad_value_is_refused_by_the_form(forms):
    refused = {(name, key): msg for name, form in forms.items() for key, msg in form["bad"].items()}
    assert refused, "no DAG has any of the probed params"
    assert all(msg for msg in refused.values()), {k: v for k, v in refused.items() if not v}


def test_form_defaults_bounds_and_help_come_from_the_spec(forms):
    from mlsys.spec import knobs
    from mlsys.training.stage import TrainSpec

    train = forms["mlsys_training"]
    for name, field in knobs(TrainSpec).items():
        if name not in train["schemas"]:
            continue
        expected = None if field.default == "" else field.default
        assert train["defaults"][name] == expected, name
        schema = train["schemas"][name]
        assert train["help"][name] == field.metadata["help"], name
        for key, bound in field.metadata["schema"].items():
            assert schema[key] == bound, (name, key)
