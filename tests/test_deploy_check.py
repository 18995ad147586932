"""The compose stack's secrets check (mlsys.deploy_check): .env.example's placeholders and bad secrets are refused."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlsys.deploy_check import problems

REPO_ROOT = Path(__file__).resolve().parents[1]


def _key_pair() -> tuple[str, str]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    return (base64.b64encode(key.private_bytes_raw()).decode(),
            base64.b64encode(key.public_key().public_bytes_raw()).decode())


def _env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (REPO_ROOT / ".env.example").read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def _secrets_check_env() -> dict[str, str]:
    """The variables docker-compose.yaml gives the secrets-check service."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    return dict(compose["services"]["secrets-check"]["environment"])


def good_env() -> dict[str, str]:
    """A filled-in .env: each secret-check variable with a value that passes."""
    from cryptography.fernet import Fernet

    signing, verify = _key_pair()
    env = {}
    for i, name in enumerate(_secrets_check_env()):
        env[name] = f"value-{i:02d}-{name.lower().replace('_', '-')}-0123456789"
    env.update({
        "POSTGRES_PASSWORD": "Pg0123456789abcdef",
        "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
        "MLSYS_MODEL_SIGNING_KEY": signing,
        "MLSYS_MODEL_VERIFY_KEY": verify,
        "MINIO_ROOT_USER": "root", "MINIO_WORKER_USER": "w", "MINIO_SERVE_USER": "s", "MINIO_MLFLOW_USER": "m",
        "MLFLOW_ADMIN_USERNAME": "admin", "MLSYS_MLFLOW_WORKER_USER": "w", "MLSYS_MLFLOW_SERVE_USER": "s",
    })
    return env


def test_a_filled_in_env_passes():
    assert problems(good_env()) == []


def test_every_placeholder_of_env_example_is_refused_by_name():
    example = _env_example()
    placeholders = {name for name, value in example.items() if "CHANGE_ME" in value}
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLSYS_SERVE_TOKEN", "MLSYS_MODEL_SIGNING_KEY"} <= placeholders
    # the values of .env.example, as compose would pass them to secrets-check
    env = {name: example[name] for name in _secrets_check_env() if name in example}
    found = problems(env)
    for name in placeholders:
        assert any(line.startswith(f"{name} ") and "CHANGE_ME" in line for line in found), (name, found)
    assert not any(example[name] in line for name in placeholders for line in found), "a message echoes a value"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("MINIO_WORKER_PASSWORD", "short-pw", "needs at least 12"),
    ("POSTGRES_PASSWORD", "p@ss/word:0123456789", "must escape"),
    ("MLSYS_SERVE_TOKEN", "fifteen-chars-x", "needs at least 16"),
    ("AIRFLOW_FERNET_KEY", "not-a-fernet-key-at-all", "Fernet"),
    ("MLSYS_MODEL_VERIFY_KEY", base64.b64encode(b"x" * 31).decode(), "32 bytes"),
    ("MLSYS_MLFLOW_SERVE_PASSWORD", "change-me-please-0123", "CHANGE_ME"),
])
def test_a_bad_secret_is_named_and_not_echoed(name, value, expected):
    env = good_env() | {name: value}
    found = problems(env)
    assert len(found) == 1 and found[0].startswith(name) and expected in found[0], found
    assert value not in found[0]


def test_two_fernet_keys_pass_while_airflow_rotates():
    from cryptography.fernet import Fernet

    env = good_env()
    assert problems(env | {"AIRFLOW_FERNET_KEY": f"{Fernet.generate_key().decode()},{env['AIRFLOW_FERNET_KEY']}"}) == []
    assert problems(env | {"AIRFLOW_FERNET_KEY": f"{env['AIRFLOW_FERNET_KEY']},not-a-key"}) != []


def test_a_verify_key_of_another_pair_is_refused():
    env = good_env() | {"MLSYS_MODEL_VERIFY_KEY": _key_pair()[1]}
    assert problems(env) == [problems(env)[0]] and "not the public key" in problems(env)[0]


def test_shared_accounts_and_reused_secrets_are_refused():
    env = good_env() | {"MINIO_SERVE_USER": "w"}
    assert problems(env) == [("MINIO_WORKER_USER and MINIO_SERVE_USER name the same account: give each service its "
                              "own username")]
    env = good_env() | {"MLSYS_MLFLOW_SERVE_PASSWORD": good_env()["MLSYS_MLFLOW_WORKER_PASSWORD"]}
    assert problems(env) == [("MLSYS_MLFLOW_SERVE_PASSWORD and MLSYS_MLFLOW_WORKER_PASSWORD have the same value: "
                              "give each its own")]


def test_a_secret_file_is_read(tmp_path):
    token = tmp_path / "token"
    token.write_text("CHANGE_ME_serve_token\n")
    env = {k: v for k, v in good_env().items() if k != "MLSYS_SERVE_TOKEN"} | {"MLSYS_SERVE_TOKEN_FILE": str(token)}
    assert [p.split()[0] for p in problems(env)] == ["MLSYS_SERVE_TOKEN"]


def test_the_command_fails_naming_the_variable_and_passes_a_good_env():
    def run(env):
        return subprocess.run([sys.executable, "-m", "mlsys.deploy_check"], check=False, capture_output=True, text=True,
                              env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT / "include"), **env})

    bad = run(good_env() | {"AIRFLOW_ADMIN_PASSWORD": "CHANGE_ME_airflow_admin_password"})
    assert bad.returncode == 1
    assert "AIRFLOW_ADMIN_PASSWORD still holds the CHANGE_ME placeholder" in bad.stderr
    assert "CHANGE_ME_airflow_admin_password" not in bad.stderr + bad.stdout
    good = run(good_env())
    assert good.returncode == 0, good.stderr
    assert "none refused" in good.stdout
