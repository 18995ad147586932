"""The deployment's MLflow accounts, made by the MLflow admin at every start.

``mlflow server --app-name basic-auth`` runs with ``default_permission =
NO_PERMISSIONS``: an account sees and changes only what a role grants it (and
what it creates itself). This module gives each of the pipeline's accounts one role::

    account (.env)            role            experiments, runs   registered models, versions, aliases   held by
    MLSYS_MLFLOW_WORKER_USER  mlsys-pipeline  EDIT                EDIT                                   Airflow
    MLSYS_MLFLOW_SERVE_USER   mlsys-reader    READ                READ                                   `serve`

EDIT reads and writes but deletes nothing and grants nothing; READ only reads.

Any account may also create experiments and registered models of its own:
MLflow restricts creation only with ``--enable-workspaces``, which refuses the
``artifact_location`` that mlsys.tracking gives each experiment. So the admin
creates the registered model ``MLSYS_MODEL_NAME`` here, before anyone else can
create (and own) the model that serve serves.

Every run brings the server to this state: a missing account is created, an
existing one gets the password given now (rotation: change .env, run again),
and its roles become exactly the one above.

The compose file's one-shot ``mlflow-init`` service runs ``python -m
mlsys.tracking.accounts`` with the admin's credentials in
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (the MLflow client reads
them) and each account's password in its variable or its ``_FILE``
(``mlsys.settings.secret``). Passwords never go on a command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from mlsys.settings import secret

WORKSPACE = "default"  # where MLflow keeps every grant while workspaces are off
PIPELINE, READER = "mlsys-pipeline", "mlsys-reader"
# role -> {resource type: permission on every resource of that type ("*")}
ROLES: dict[str, dict[str, str]] = {
    PIPELINE: {"experiment": "EDIT", "registered_model": "EDIT"},
    READER: {"experiment": "READ", "registered_model": "READ"},
}
MIN_PASSWORD = 12  # MLflow refuses shorter passwords


@dataclass(frozen=True)
class Account:
    username: str
    password: str = field(repr=False)
    role: str

    def __post_init__(self):
        if not self.username:
            raise ValueError(f"an MLflow account for role {self.role!r} has an empty username: set it in .env")
        if self.role not in ROLES:
            raise ValueError(f"account {self.username!r}: role {self.role!r} is not one of {sorted(ROLES)}")
        if len(self.password) < MIN_PASSWORD:
            raise ValueError(f"account {self.username!r}: its password has {len(self.password)} characters, MLflow "
                             f"needs at least {MIN_PASSWORD}; set a longer one in .env")


# (role, username variable, default username, password variable)
ENV_ACCOUNTS = (
    (PIPELINE, "MLSYS_MLFLOW_WORKER_USER", "mlsys-worker", "MLSYS_MLFLOW_WORKER_PASSWORD"),
    (READER, "MLSYS_MLFLOW_SERVE_USER", "mlsys-serve", "MLSYS_MLFLOW_SERVE_PASSWORD"),
)


def accounts_from_env() -> list[Account]:
    """The worker and serve accounts from the environment; a missing password names its variable."""
    accounts = []
    for role, user_var, default_user, password_var in ENV_ACCOUNTS:
        password = secret(password_var)
        if not password:
            raise ValueError(f"{password_var} (or {password_var}_FILE) is not set: the password of the MLflow "
                             f"account with role {role}")
        accounts.append(Account(os.environ.get(user_var, "").strip() or default_user, password, role))
    return accounts


def _is_missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _ensure_role(client, name: str, grants: dict[str, str]) -> int:
    """The id of role ``name``, created if missing, with exactly ``grants`` on ``*``."""
    role = next((r for r in client.list_roles(WORKSPACE) if r.name == name), None)
    if role is None:
        role = client.create_role(WORKSPACE, name, "mlsys (mlsys.tracking.accounts)")
    have = {(p.resource_type, p.resource_pattern): p for p in client.list_role_permissions(role.id)}
    for resource_type, permission in grants.items():
        current = have.pop((resource_type, "*"), None)
        if current is None:
            client.add_role_permission(role.id, resource_type, "*", permission)
        elif current.permission != permission:
            client.update_role_permission(current.id, permission)
    for stale in have.values():
        client.remove_role_permission(stale.id)
    return role.id


def _ensure_user(client, account: Account, role_ids: dict[str, int]) -> str:
    try:
        user = client.get_user(account.username)
    except Exception as exc:  # MlflowException / RestException; only "no such user" is expected
        if not _is_missing(exc):
            raise
        user = None
    if user is None:
        client.create_user(account.username, account.password)
        action = "created"
    else:
        if user.is_admin:
            raise ValueError(f"MLflow account {account.username!r} is an admin: give the {account.role} account "
                             f"a username of its own")
        client.update_user_password(account.username, account.password)
        action = "updated"
    held = {r.name: r.id for r in client.list_user_roles(account.username)}
    for name, role_id in held.items():
        if name != account.role:
            client.unassign_role(account.username, role_id)
    if account.role not in held:
        client.assign_role(account.username, role_ids[account.role])
    return f"{action} MLflow account {account.username!r} with role {account.role}"


def _ensure_model(tracking_uri: str, model_name: str) -> str:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(model_name)
        return f"registered model {model_name!r} exists"
    except Exception as exc:
        if not _is_missing(exc):
            raise
    client.create_registered_model(model_name, description="Created by mlflow-init (mlsys.tracking.accounts).")
    return f"created registered model {model_name!r}"


def ensure_accounts(tracking_uri: str, accounts: Sequence[Account], model_name: str = "") -> list[str]:
    """Bring the server at ``tracking_uri`` to the roles of ``ROLES`` and ``accounts``; a line per change.

    The caller is the MLflow admin: ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``."""
    from mlflow.server.auth.client import AuthServiceClient

    client = AuthServiceClient(tracking_uri)
    role_ids = {name: _ensure_role(client, name, grants) for name, grants in ROLES.items()}
    lines = [_ensure_user(client, account, role_ids) for account in accounts]
    if model_name:
        lines.append(_ensure_model(tracking_uri, model_name))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlsys.tracking.accounts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""),
                        help="the MLflow server (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--model-name", default=os.environ.get("MLSYS_MODEL_NAME", ""),
                        help="the registered model to create as the admin (default: $MLSYS_MODEL_NAME; empty: none)")
    args = parser.parse_args(argv)
    if not args.tracking_uri.startswith(("http://", "https://")):
        parser.error(f"--tracking-uri {args.tracking_uri!r} is not an MLflow server URL: set MLFLOW_TRACKING_URI")
    if not os.environ.get("MLFLOW_TRACKING_USERNAME") or not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        parser.error("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to the MLflow admin's credentials")
    try:
        accounts = accounts_from_env()
    except ValueError as exc:
        parser.error(str(exc))
    for line in ensure_accounts(args.tracking_uri, accounts, args.model_name):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
