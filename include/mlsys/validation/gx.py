"""Great Expectations as the engine: run a schema's suite on a DataFrame, render Data Docs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsys.validation.schema import Schema

if TYPE_CHECKING:
    import pandas as pd


def prepare(df: "pd.DataFrame", schema: Schema) -> "pd.DataFrame":
    """The frame as GX should see it.

    - string and categorical columns as object columns (GX 1.24 does not recognise pandas 3's StringDtype);
    - a float column that the schema declares ``int`` and that holds only whole
      numbers is an integer column with missing values: pandas' nullable ``Int64``.
    """
    import numpy as np

    changes: dict[str, Any] = {}
    for name in df.columns:
        dtype = str(df[name].dtype)
        if dtype in ("str", "string", "category"):
            changes[name] = object
        elif dtype.startswith("float") and schema.columns.get(name, {}).get("type") == "int":
            values = df[name].to_numpy(dtype=float, na_value=np.nan)
            present = values[~np.isnan(values)]
            if np.all(np.mod(present, 1.0) == 0):
                changes[name] = "Int64"
    return df.astype(changes) if changes else df


def check(df: "pd.DataFrame", schema: Schema, environment: str = "training", docs_dir: str | Path | None = None
          ) -> tuple[bool, int, list[dict[str, Any]], dict[str, Any]]:
    """Run the schema's GX suite on a DataFrame: (success, #expectations, failures, full result).

    With ``docs_dir``, GX Data Docs (HTML) for the suite and this validation are written there.
    """
    import logging

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        context.data_sources.add_pandas("mlsys")
        .add_dataframe_asset(schema.dataset)
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(schema.to_suite(environment))
    vd = context.validation_definitions.add(gx.ValidationDefinition(name=f"{schema.dataset}_check", data=batch_def, suite=suite))
    actions = []
    if docs_dir is not None:
        context.add_data_docs_site(site_name="mlsys", site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
        })
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["mlsys"]))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=f"{schema.dataset}_checkpoint", validation_definitions=[vd], actions=actions, result_format="SUMMARY"))
    run = checkpoint.run(batch_parameters={"dataframe": prepare(df, schema)})
    (result,) = run.run_results.values()
    failed = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            res = r.result or {}
            failed.append(
                {
                    "expectation": cfg.type,
                    "column": cfg.kwargs.get("column"),
                    "kwargs": {k: v for k, v in cfg.kwargs.items() if k not in ("column", "batch_id")},
                    "observed": res.get("observed_value"),
                    "unexpected_count": res.get("unexpected_count"),
                    "unexpected_percent": res.get("unexpected_percent"),
                    "partial_unexpected_list": res.get("partial_unexpected_list", [])[:10],
                    "exception": _exception(r.exception_info),
                }
            )
    return bool(result.success), len(result.results), failed, result.to_json_dict()


def _exception(info: dict | None) -> str | None:
    """GX's exception message for an expectation that raised (flat, or keyed by metric), else None."""
    info = info or {}
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    messages = [v.get("exception_message") for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return "; ".join(str(m) for m in messages) or None
