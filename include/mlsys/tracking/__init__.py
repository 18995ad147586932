"""MLflow tracking: run contexts, nested runs per task, dataset inputs."""

from mlsys.tracking.context import RunContext
from mlsys.tracking.tracker import configure, experiment_id, log_input, log_output, run_url, stage_run

__all__ = ["RunContext", "configure", "experiment_id", "log_input", "log_output", "run_url", "stage_run"]
