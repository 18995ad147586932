"""
### mlsys model selection: a grid of configurations → the best → champion gate

Trigger it with a **grid** (a dict of lists: every combination is a candidate) or a **list** of
configurations, e.g. `{"lr": [0.003, 0.01], "dim": [32, 64], "depth": [1, 2]}`. Keys: `lr`, `dim`,
`depth`, `dropout`, `batch_size`, `epochs`, `optimizer` (`adam`/`sgd`); an unknown key or a bad value
fails **plan** before anything trains.

- `mode=sharp`: **select_all** trains every candidate in one task with SHARP (Hydra's shard
  alternator) on `workers` devices of one node; a candidate bigger than `budget_mb` is spilled.
- `mode=mop`: **select_all** trains every candidate with Cerebro's model hopper parallelism: `workers`
  torchrun ranks each hold one partition of the rows, and the candidates (spilled ones too) hop between
  them once per sub-epoch. A retry of the task resumes each candidate at its last finished epoch.
- `mode=mapped`: **select_one** is mapped over the candidates, one Airflow task each, across workers.

Each candidate is a nested MLflow run (its config, loss curve and validation metrics); a comparison
plot is logged. **pick** keeps the best on the validation `metric` (held-out gold rows), and
**evaluate_register** registers it as `challenger` and promotes it to `champion` only if it beats the
champion on the test split (`gate_metric`). Emits `champion_model`.
"""

from __future__ import annotations

import json

import pendulum
from airflow.sdk import Param, dag, task

from mlsys.orchestration import CHAMPION_MODEL, DEFAULT_ARGS, form, run_in_task
from mlsys.registry.gate import PROMOTION_POOL
from mlsys.registry.stage import EvaluateSpec
from mlsys.spec import knobs
from mlsys.training.selection import SelectionSpec


@dag(
    dag_id="mlsys_model_selection",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlsys", "train", "model-selection", "registry"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params={
        "grid": Param(json.loads(SelectionSpec.grid), type=["object", "array"],
                      description=knobs(SelectionSpec)["grid"].metadata["help"]),
        **form(SelectionSpec, "mode", "metric", "workers", "device", "budget_mb", "val_fraction", "dataset_version",
               "seed"),
        **form(EvaluateSpec, "gate_metric"),
    },
)
def mlsys_model_selection():
    @task
    def plan(params=None) -> dict:
        from mlsys.training.selection import expand

        return {"mode": params["mode"], "candidates": expand(params["grid"])}

    @task.branch
    def choose_mode(planned: dict) -> str:
        return "candidate_grids" if planned["mode"] == "mapped" else "select_all"

    @task
    def select_all(params=None, dag_run=None) -> dict:
        import json

        key = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{dag_run.dag_id}-{dag_run.run_id}")
        return run_in_task("select", params, grid=json.dumps(params["grid"]), checkpoint_key=key)  # retries resume

    @task
    def candidate_grids(planned: dict) -> list[str]:
        import json

        return [json.dumps([c]) for c in planned["candidates"]]

    @task
    def select_one(grid: str, params=None) -> dict:
        return run_in_task("select", params, grid=grid, workers=1)

    @task(trigger_rule="none_failed_min_one_success")
    def pick(together: dict | None, mapped: list | None, params=None) -> dict:
        results = [r for r in ([together] if together else []) + list(mapped or []) if r]
        if not results:
            raise ValueError("no candidate trained: neither select_all nor select_one returned a result")

        def score(r: dict) -> float:
            return next(c["val"][params["metric"]] for c in r["candidates"] if c["name"] == r["best"])

        best = max(results, key=score)
        return {"model_uri": best["model_uri"], "best": best["best"], "score": score(best)}

    @task(pool=PROMOTION_POOL, outlets=[CHAMPION_MODEL])  # one promotion at a time, across DAGs
    def evaluate_register(picked: dict, params=None) -> dict:
        return run_in_task("evaluate", params, model_uri=picked["model_uri"])

    planned = plan()
    choice = choose_mode(planned)
    together = select_all()
    grids = candidate_grids(planned)
    mapped = select_one.expand(grid=grids)
    choice >> [together, grids]
    evaluate_register(pick(together, mapped))


dag = mlsys_model_selection()
