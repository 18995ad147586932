"""CLI commands of the serve package: ``mlsys serve``."""

from __future__ import annotations

import argparse
import dataclasses
import typing

HELP = {
    "predict_auth": "/predict needs 'Authorization: Bearer <token>' too (POST /reload always does); "
                    "default: $MLSYS_SERVE_PREDICT_AUTH, else off",
    "reload_interval_s": "at most one POST /reload registry check per this many seconds (429 + Retry-After "
                         "inside the window; 0: only one at a time); default: %(default)s",
    "torch_threads": "torch's intra-op threads for scoring (batches are small: more threads mostly spin); "
                     "default: %(default)s",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mlsys.serving.online.server import ServeConfig

    p.description = ("Serve the model holding an alias (default champion) from the MLflow registry; "
                     "reloads when the alias moves or on POST /reload. The token of /reload (and of /predict "
                     "under --predict-auth) comes from $MLSYS_SERVE_TOKEN or the file $MLSYS_SERVE_TOKEN_FILE "
                     "names, never from the command line.")
    hints = typing.get_type_hints(ServeConfig)
    for f in dataclasses.fields(ServeConfig):
        flag, help = f"--{f.name.replace('_', '-')}", HELP.get(f.name, f"default: {f.default!r}")
        if hints[f.name] in (bool, bool | None):  # --x / --no-x
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default, help=help)
        else:
            p.add_argument(flag, dest=f.name, type=hints[f.name], default=f.default, help=help)


def run(args: argparse.Namespace) -> int:
    import sys

    from mlsys.serving.online.server import ServeConfig, configure_logging, create_app, serve

    configure_logging()
    try:  # every bad flag, token or $MLSYS_SERVE_PREDICT_AUTH fails here, before MLflow or a port is touched
        config = ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)})
        app = create_app(config)
    except ValueError as exc:  # SpecError included
        print(f"mlsys serve: {exc}", file=sys.stderr)
        return 2
    return serve(config, app)
