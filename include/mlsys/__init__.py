"""mlsys: an Airflow-orchestrated ML system tracked in MLflow.

Stages (each a frozen spec, a ``run(spec)`` and a CLI subcommand):
ingest -> label -> validate -> train -> evaluate/register -> batch inference.
"""

__version__ = "0.1.0"
