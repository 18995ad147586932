"""A global "View in MLflow" extra link on every Airflow task instance.

Contract: an mlsys task that logs to MLflow pushes an XCom with key
``mlflow_run_url`` holding the full URL of the MLflow UI run page.

How Airflow 3.3 resolves it: global links are not serialized with the DAG and
the worker never calls them. The API server (route
``GET /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links``)
calls ``get_link(operator, ti_key=...)`` in its own process, where the
metadata DB is reachable, so ``get_link`` reads the XCom row directly.
An empty string means "no link"; the API turns it into ``null`` and the UI
leaves the button out.

This module is imported by every Airflow component: keep it light (no
mlflow, no pandas); the DB imports happen only inside ``get_link``.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

XCOM_KEY = "mlflow_run_url"
LINK_NAME = "View in MLflow"


def _as_url(value: Any) -> str:
    """Return ``value`` as an http(s) URL, or "" (never a javascript: or other URL)."""
    if isinstance(value, str) and value[:1] in "\"[{":
        try:  # a JSON-encoded string stored as text
            value = json.loads(value)
        except ValueError:
            pass
    if not isinstance(value, str):
        return ""
    value = value.strip()
    return value if value.lower().startswith(("http://", "https://")) else ""


class MLflowRunLink(BaseOperatorLink):
    """Link to the MLflow run that the task pushed as XCom ``mlflow_run_url``."""

    name = LINK_NAME

    @property
    def xcom_key(self) -> str:
        return XCOM_KEY

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        # Runs in the API server, which has the metadata DB (core imports are lazy).
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        query = XComModel.get_many(
            key=XCOM_KEY,
            run_id=ti_key.run_id,
            dag_ids=ti_key.dag_id,
            task_ids=ti_key.task_id,
            map_indexes=ti_key.map_index,
            limit=1,
        ).with_only_columns(XComModel.value)
        with create_session() as session:
            value = session.scalar(query)
        return _as_url(value)


class MLflowLinkPlugin(AirflowPlugin):
    name = "mlflow_link"
    global_operator_extra_links = [MLflowRunLink()]
