"""CLI commands of the validation package (registered in ``mlsys.cli.COMMANDS``).

    mlsys stats --data PATH [--out STATS.json]
    mlsys schema infer --data PATH --out SCHEMA.yaml [--dataset NAME] [--label COLUMN]
    mlsys schema accept --schema SCHEMA.yaml|NAME      # accept the pending proposed update
    mlsys schema show --schema SCHEMA.yaml|NAME        # current version, history, pending diff
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlsys.storage.table_file import read_table


def add_stats_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="CSV or Parquet file")
    p.add_argument("--out", default="", help="also write the full statistics as JSON here")


def add_schema_arguments(schema: argparse.ArgumentParser) -> None:
    ssub = schema.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    infer = ssub.add_parser("infer", help="infer a schema (YAML) from a CSV or Parquet file")
    infer.add_argument("--data", required=True, help="CSV or Parquet file")
    infer.add_argument("--out", required=True, help="where to write the schema YAML")
    infer.add_argument("--dataset", default="", help="dataset name in the schema (default: the file's stem)")
    infer.add_argument("--label", default="", help="the label column: required in training, absent in serving")
    infer.add_argument("--force", action="store_true", help="overwrite an existing schema file")
    for name, text in (("accept", "accept the pending proposed schema update"),
                       ("show", "show the current version, its history and any pending proposal")):
        q = ssub.add_parser(name, help=text)
        q.add_argument("--schema", required=True, help="schema YAML path, or a schema name in the storage root")
        q.add_argument("--storage-uri", default="", help="storage root for named schemas (default: MLSYS_STORAGE_URI)")


def _fail(command: str, exc: Exception) -> int:
    print(f"mlsys {command}: {exc}", file=sys.stderr)
    return 2


def stats(args: argparse.Namespace) -> int:
    from mlsys.errors import MlsysError
    from mlsys.validation import statistics

    try:
        stats = statistics.compute(read_table(args.data))
    except MlsysError as exc:
        return _fail("stats", exc)
    if args.out:
        statistics.save(stats, args.out)
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        print(stats.table().to_string(index=False))
    print(json.dumps({"rows": stats.rows, "columns": len(stats.columns), "out": args.out or None}))
    return 0


def schema(args: argparse.Namespace) -> int:
    from mlsys.errors import MlsysError

    try:
        return {"infer": _infer, "accept": _accept, "show": _show}[args.schema_command](args)
    except MlsysError as exc:
        return _fail(f"schema {args.schema_command}", exc)


def _infer(args: argparse.Namespace) -> int:
    from mlsys.errors import SpecError
    from mlsys.validation import statistics
    from mlsys.validation.infer import infer

    out = Path(args.out)
    if out.exists() and not args.force:
        raise SpecError(f"{out} exists; a schema changes by accepted versions (mlsys schema accept), "
                        "or pass --force to start over")
    stats = statistics.compute(read_table(args.data))
    schema = infer(stats, args.dataset or Path(args.data).stem.replace(" ", "_"), label=args.label)
    schema.save(out)
    print(schema.to_yaml())
    print(json.dumps({"schema": str(out), "dataset": schema.dataset, "version": schema.version,
                      "columns": len(schema.columns)}))
    return 0


def _registry(args: argparse.Namespace):
    from mlsys.storage import DatasetStore
    from mlsys.validation.evolution import SchemaRegistry

    return SchemaRegistry.open(args.schema, DatasetStore(args.storage_uri or None))


def _accept(args: argparse.Namespace) -> int:
    reg = _registry(args)
    pending = reg.pending()
    schema = reg.accept()
    if pending is not None:
        print(pending.diff)
    print(json.dumps({"schema": reg.uri, "version": schema.version, "history": reg.versions()}))
    return 0


def _show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    schema = reg.current()
    pending = reg.pending()
    print(schema.to_yaml())
    if pending is not None:
        print(f"pending proposal (accept with: mlsys schema accept --schema {args.schema}):\n{pending.diff}")
    print(json.dumps({"schema": reg.uri, "version": schema.version, "history": reg.versions(),
                      "pending": pending.schema.version if pending else None}))
    return 0
