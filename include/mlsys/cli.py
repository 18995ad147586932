"""``mlsys``: run any stage without Airflow, plus tools, benchmarks, the demo and the UIs.

    mlsys ingest --gold-size 200
    mlsys label --lfs my_pkg.my_lfs
    mlsys train --epochs 5
    mlsys bench <name> [--rows N]   # prints one JSON object as its last line
    mlsys demo                      # the whole nightly pipeline through Airflow
    mlsys up                        # Airflow UI (standalone) + MLflow UI on the same state

Packages add their own commands: a module listed in COMMAND_MODULES defines
``add_commands(subparsers) -> {name: handler(args) -> exit code}``; a module
listed in BENCHMARKS defines ``main(argv) -> exit code``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import typing

from mlsys import stages

COMMAND_MODULES: list[str] = ["mlsys.validation.commands", "mlsys.inference.commands", "mlsys.streaming.commands"]  # e.g. "mlsys.validation.commands"
BENCHMARKS: dict[str, str] = {"stats": "mlsys.validation.benchmark", "label": "mlsys.labeling.benchmark", "label_quality": "mlsys.labeling.quality", "pipeline": "mlsys.training.benchmark", "batch": "mlsys.inference.batch_benchmark", "serve": "mlsys.inference.serve_benchmark", "krypton": "mlsys.streaming.benchmark", "spill": "mlsys.training.spill_benchmark", "sharp": "mlsys.training.sharp_benchmark"}  # name -> module with main(argv), e.g. "label": "mlsys.labeling.benchmark"


def _add_spec_args(parser: argparse.ArgumentParser, spec_cls: type) -> None:
    hints = typing.get_type_hints(spec_cls)
    for f in dataclasses.fields(spec_cls):
        kind = hints[f.name]
        kind = {int: int, float: float, bool: lambda v: v.lower() in ("1", "true", "yes")}.get(kind, str)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=None,
                            help=f"default: {f.default!r}")


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
        _add_spec_args(p, stage.load()[0])
        handlers[stage.name] = lambda args: run_stage_command(
            args.command, {k: v for k, v in vars(args).items() if k != "command"})
    for module in COMMAND_MODULES:
        handlers |= importlib.import_module(module).add_commands(sub)
    bench = sub.add_parser("bench", help="run a benchmark; its last line is one JSON object", add_help=False)
    bench.add_argument("name", choices=sorted(BENCHMARKS) or ["(none)"])
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    sub.add_parser("demo", help="run the whole nightly pipeline through Airflow on embedded defaults")
    sub.add_parser("up", help="start the Airflow UI (standalone) and the MLflow UI on the embedded state")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from mlsys.local import demo

        return demo()
    if args.command == "up":
        from mlsys.local import up

        return up()
    if args.command == "bench":
        return importlib.import_module(BENCHMARKS[args.name]).main(args.rest)
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
