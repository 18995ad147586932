"""Who is running a stage: an Airflow task, or a person at the CLI.

This is plain data, built by the Airflow adapter (``mlsys.orchestration``) from
the task context, or by the CLI. The tracker turns it into MLflow tags.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunContext:
    pipeline: str  # the MLflow experiment: one per pipeline (DAG), "mlsys-cli" from the CLI
    stage: str
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None
    # A mapped task instance's index; -1: not mapped. None: unknown, so the tracker cannot tell a task's tries
    # from its mapped siblings and neither reopens nor supersedes runs (stage_run).
    map_index: int | None = None

    @property
    def in_airflow(self) -> bool:
        return self.dag_id is not None and self.run_id is not None

    def tags(self) -> dict[str, str]:
        tags = {"mlsys.stage": self.stage, "mlsys.pipeline": self.pipeline}
        if self.in_airflow:
            tags |= {
                "airflow.dag_id": self.dag_id,
                "airflow.run_id": self.run_id,
                "airflow.task_id": self.task_id or "",
                "airflow.try_number": str(self.try_number or 1),
            }
            if self.map_index is not None and self.map_index >= 0:
                tags["airflow.map_index"] = str(self.map_index)
        return tags

    @classmethod
    def cli(cls, stage: str) -> "RunContext":
        return cls(pipeline="mlsys-cli", stage=stage)
