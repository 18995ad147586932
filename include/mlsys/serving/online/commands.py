"""CLI commands of the serve package: ``mlsys serve``."""

from __future__ import annotations

import argparse
import dataclasses
import typing


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mlsys.serving.online.server import ServeConfig

    p.description = ("Serve the model holding an alias (default champion) from the MLflow registry; "
                     "reloads when the alias moves or on POST /reload.")
    hints = typing.get_type_hints(ServeConfig)
    for f in dataclasses.fields(ServeConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=hints[f.name], default=f.default,
                       help=f"default: {f.default!r}")


def run(args: argparse.Namespace) -> int:
    import sys

    from mlsys.errors import SpecError
    from mlsys.serving.online.server import ServeConfig, serve

    try:
        config = ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)})
    except SpecError as exc:
        print(f"mlsys serve: {exc}", file=sys.stderr)
        return 2
    return serve(config)
