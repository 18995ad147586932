"""``mlsys``: run any stage without Airflow, plus the demo and the UIs.

    mlsys ingest --gold-size 200
    mlsys label --lfs my_pkg.my_lfs
    mlsys train --epochs 5
    mlsys demo          # the whole nightly pipeline through Airflow
    mlsys up            # Airflow UI (standalone) + MLflow UI on the same state
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from mlsys import stages


def _add_spec_args(parser: argparse.ArgumentParser, spec_cls: type) -> None:
    hints = typing.get_type_hints(spec_cls)
    for f in dataclasses.fields(spec_cls):
        kind = hints[f.name]
        kind = {int: int, float: float, bool: lambda v: v.lower() in ("1", "true", "yes")}.get(kind, str)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=None,
                            help=f"default: {f.default!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys", description="mlsys: the ML lifecycle as Airflow stages, tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in stages.STAGES.values():
        p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
        _add_spec_args(p, stage.load()[0])
    sub.add_parser("demo", help="run the whole nightly pipeline through Airflow on embedded defaults")
    sub.add_parser("up", help="start the Airflow UI (standalone) and the MLflow UI on the embedded state")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from mlsys.local import demo

        return demo()
    if args.command == "up":
        from mlsys.local import up

        return up()

    from mlsys.errors import MlsysError
    from mlsys.spec import from_params
    from mlsys.tracking import RunContext, stage_run

    params = {k: v for k, v in vars(args).items() if k != "command"}
    spec_cls, run = stages.get(args.command).load()
    try:
        spec = from_params(spec_cls, params)  # checked before any MLflow run opens
        with stage_run(RunContext.cli(args.command)):
            result = run(spec)
    except MlsysError as exc:
        print(f"mlsys {args.command}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
