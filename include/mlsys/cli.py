"""``mlsys``: run any stage without Airflow, plus tools, benchmarks, the demo and the UIs.

    mlsys ingest --gold-size 200
    mlsys label --lfs my_pkg.my_lfs
    mlsys train --epochs 5
    mlsys bench <name> [--rows N]   # prints one JSON object as its last line
    mlsys demo                      # the whole nightly pipeline through Airflow
    mlsys up                        # Airflow UI (standalone) + MLflow UI on the same state

Stages come from ``mlsys.stages.STAGES`` (their flags from their specs), other
commands from ``COMMANDS`` below, benchmarks from ``mlsys.bench.BENCHMARKS``:
three registries, one pattern (``mlsys.catalog``). A command's module defines
``configure(parser)`` and ``run(args) -> exit code`` under the names its entry gives.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from dataclasses import dataclass

from mlsys import stages
from mlsys.catalog import Entry, index


@dataclass(frozen=True)
class Command(Entry):
    configure: str = "add_arguments"  # (parser) -> None; "" = no arguments
    run: str = "run"  # (args) -> exit code

    def load(self) -> tuple[typing.Callable[[argparse.ArgumentParser], None] | None,
                            typing.Callable[[argparse.Namespace], int]]:
        return (self.attr(self.configure) if self.configure else None), self.attr(self.run)


COMMANDS: dict[str, Command] = index((
    Command("stats", "mlsys.validation.commands", "column statistics of a CSV or Parquet file",
            configure="add_stats_arguments", run="stats"),
    Command("schema", "mlsys.validation.commands", "infer, show or accept a dataset schema",
            configure="add_schema_arguments", run="schema"),
    Command("serve", "mlsys.serving.online.commands",
            "serve the champion over HTTP with adaptive batching (FastAPI + uvicorn)"),
    Command("stream-put", "mlsys.streaming.commands", "upload a video file as the next segment of a stream"),
    Command("explain", "mlsys.streaming.explain",
            "occlusion heatmap of an image (Krypton's incremental OBE), logged to MLflow", run="main"),
    Command("datasets", "mlsys.storage.commands",
            "list datasets, show NAME@REF (a version, latest, validated or a snapshot), or a dataset's history"),
    Command("bench", "mlsys.bench", "run a benchmark; its last line is one JSON object"),
    Command("demo", "mlsys.local", "run the whole nightly pipeline through Airflow on embedded defaults",
            configure="", run="demo"),
    Command("up", "mlsys.local", "start Airflow (standalone) and the MLflow UI on the embedded state; unpause the DAGs",
            configure="add_up_arguments", run="up"),
))


def add_spec_arguments(parser: argparse.ArgumentParser, spec_cls: type) -> None:
    """One ``--flag`` per spec field, typed from its annotation; None (not given) leaves the spec's default."""
    hints = typing.get_type_hints(spec_cls)
    for f in dataclasses.fields(spec_cls):
        kind = hints[f.name]
        kind = {int: int, float: float, bool: lambda v: v.lower() in ("1", "true", "yes")}.get(kind, str)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=None,
                            help=f"{f.metadata.get('help', '')} (default: {f.default!r})".lstrip())


def run_stage_command(name: str, params: dict[str, typing.Any]) -> int:
    """Build the spec (errors before any MLflow run opens), run the stage in a tracked run, print its JSON."""
    from mlsys.errors import MlsysError, ValidationFailed
    from mlsys.spec import from_params
    from mlsys.tracking import RunContext, stage_run

    spec_cls, run = stages.get(name).load()
    try:
        spec = from_params(spec_cls, params)
        with stage_run(RunContext.cli(name)):
            result = run(spec)
    except ValidationFailed as exc:
        print(f"mlsys {name}: {exc}", file=sys.stderr)
        return 1
    except MlsysError as exc:
        print(f"mlsys {name}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys", description="mlsys: the ML lifecycle as Airflow stages, tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers: dict[str, typing.Callable[[argparse.Namespace], int]] = {}
    for stage in stages.STAGES.values():
        p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
        add_spec_arguments(p, stage.load()[0])
        handlers[stage.name] = lambda args: run_stage_command(
            args.command, {k: v for k, v in vars(args).items() if k != "command"})
    for command in COMMANDS.values():
        configure, run = command.load()
        p = sub.add_parser(command.name, help=command.help, description=command.help, add_help=command.name != "bench")
        if configure is not None:
            configure(p)
        handlers[command.name] = run
    args = parser.parse_args(argv)
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
