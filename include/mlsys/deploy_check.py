"""The compose stack's secrets, checked before anything starts: ``python -m mlsys.deploy_check``.

The one-shot ``secrets-check`` service of docker-compose.yaml runs this with
every secret of ``.env`` in its environment (and no network); every other
service waits for it to complete, so a refused value stops ``docker compose up``
with the messages below in ``docker compose logs secrets-check``. It refuses:

    any value holding .env.example's placeholder (CHANGE_ME)
    *_PASSWORD shorter than 12 characters          MLflow refuses shorter passwords, MinIO under 8
    POSTGRES_PASSWORD with characters a URL must escape   it goes into the Airflow database URL
    *SECRET* / *TOKEN* shorter than 16 characters  `mlsys serve` refuses a shorter token
    AIRFLOW_FERNET_KEY that is not a Fernet key    url-safe base64 of 32 bytes ("new,old" while rotating)
    MLSYS_MODEL_SIGNING_KEY / _VERIFY_KEY          base64 of 32 bytes each, and one Ed25519 key pair
    two accounts of one service with one username, or two secrets with one value

Messages name the variable and never echo a value. A secret may also be given
as a file, ``NAME_FILE`` (``mlsys.settings.secret``). Standard library only,
apart from the key-pair check (``cryptography``, in the image).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import re
import sys
from collections.abc import Callable, Mapping

PLACEHOLDER = re.compile(r"change[-_ ]?me", re.IGNORECASE)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")
URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
SIGNING_KEY, VERIFY_KEY = "MLSYS_MODEL_SIGNING_KEY", "MLSYS_MODEL_VERIFY_KEY"
# usernames that must differ: one account per service, so that a key says who acts
ACCOUNT_GROUPS = (
    ("MINIO_ROOT_USER", "MINIO_WORKER_USER", "MINIO_SERVE_USER", "MINIO_MLFLOW_USER"),
    ("MLFLOW_ADMIN_USERNAME", "MLSYS_MLFLOW_WORKER_USER", "MLSYS_MLFLOW_SERVE_USER"),
)
NEW_PASSWORD = "python -c 'import secrets; print(secrets.token_urlsafe(24))'"


def _min_chars(n: int) -> Callable[[str, str], str | None]:
    def check(name: str, value: str) -> str | None:
        if len(value) < n:
            return f"{name} has {len(value)} characters, needs at least {n}: make one with {NEW_PASSWORD}"
        return None

    return check


def _url_safe(name: str, value: str) -> str | None:
    if not URL_SAFE.fullmatch(value):
        return f"{name} has characters a database URL must escape: use letters, digits and . _ ~ - only"
    return None


def _decoded(value: str, urlsafe: bool = False) -> bytes:
    try:
        return (base64.urlsafe_b64decode if urlsafe else base64.b64decode)(value.encode())
    except (binascii.Error, ValueError):
        return b""


def _fernet(name: str, value: str) -> str | None:
    # "new,old" while Airflow rotates its key (airflow rotate-fernet-key)
    if any(len(_decoded(key.strip(), urlsafe=True)) != 32 for key in value.split(",")):
        return (f"{name} is not a Fernet key, or a comma-separated list of them (url-safe base64 of 32 bytes): make "
                f"one with python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'")
    return None


def _raw_key(name: str, value: str) -> str | None:
    if len(_decoded(value)) != 32:
        return f"{name} is not base64 of 32 bytes: make a key pair as .env.example shows"
    return None


# (variable name pattern, check): every rule whose pattern matches a variable's full name applies
RULES: tuple[tuple[re.Pattern, Callable[[str, str], str | None]], ...] = (
    (re.compile(r".*_PASSWORD"), _min_chars(12)),
    (re.compile(r"POSTGRES_PASSWORD"), _url_safe),
    (re.compile(r".*(SECRET|TOKEN).*"), _min_chars(16)),
    (re.compile(r"AIRFLOW_FERNET_KEY"), _fernet),
    (re.compile(rf"{SIGNING_KEY}|{VERIFY_KEY}"), _raw_key),
)


def _value(env: Mapping[str, str], name: str) -> str:
    path = env.get(f"{name}_FILE", "")
    if path and not env.get(name):
        try:
            with open(path) as fh:
                return fh.read().strip()
        except OSError as exc:
            return f"<unreadable {name}_FILE: {exc.strerror}>"
    return env.get(name, "").strip()


def _key_pair_problem(signing: str, verify: str) -> str | None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.from_private_bytes(base64.b64decode(signing)).public_key().public_bytes_raw()
    if public != base64.b64decode(verify):
        return (f"{VERIFY_KEY} is not the public key of {SIGNING_KEY}: serve would refuse every model the pipeline "
                f"signs; make the two together as .env.example shows")
    return None


def problems(env: Mapping[str, str]) -> list[str]:
    """Everything wrong with the secrets in ``env`` (a variable ``X_FILE`` stands for ``X``), one line each."""
    names = sorted({n.removesuffix("_FILE") for n in env})
    values = {name: _value(env, name) for name in names}
    out = []
    for name in names:
        if PLACEHOLDER.search(values[name]):
            out.append(f"{name} still holds the CHANGE_ME placeholder of .env.example: set a real value in .env")
            continue
        for pattern, check in RULES:
            if pattern.fullmatch(name) and (problem := check(name, values[name])):
                out.append(problem)
    keys_ok = not any(p.startswith((SIGNING_KEY, VERIFY_KEY)) for p in out)
    if keys_ok and values.get(SIGNING_KEY) and values.get(VERIFY_KEY) and (
            problem := _key_pair_problem(values[SIGNING_KEY], values[VERIFY_KEY])):
        out.append(problem)
    for group in ACCOUNT_GROUPS:
        for a, b in itertools.combinations([n for n in group if values.get(n)], 2):
            if values[a] == values[b]:
                out.append(f"{a} and {b} name the same account: give each service its own username")
    secrets = [n for n in names if SECRET_NAME.search(n) and values[n] and not PLACEHOLDER.search(values[n])]
    for a, b in itertools.combinations(secrets, 2):
        if values[a] == values[b]:
            out.append(f"{a} and {b} have the same value: give each its own")
    return out


def main() -> int:
    found = problems(os.environ)
    if found:
        print(f"secrets-check: {len(found)} problem(s) in .env; the stack does not start until they are fixed:",
              file=sys.stderr)
        for line in found:
            print(f"  - {line}", file=sys.stderr)
        return 1
    checked = sum(1 for n in os.environ if SECRET_NAME.search(n.removesuffix("_FILE")))
    print(f"secrets-check: {checked} secrets checked, none refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
