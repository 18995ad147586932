"""What each docker-compose.yaml service would see in its container, made local: environment, command, files.

The compose topology test (``test_compose_topology.py``) runs the services as local processes. Everything a
process gets comes from docker-compose.yaml (and the image's ``Dockerfile``), resolved the way Compose does,
then localised:

* **variables**: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR:+alt}`` and
  ``$$`` are expanded from ``.env``-like values (:func:`interpolate`); a required variable that is unset fails
  with Compose's own message. :func:`example_values` makes those values from ``.env.example``, with every
  CHANGE_ME secret replaced by a generated one of the right kind.
* **hostnames**: each ``scheme://host:port`` of a value or argument is pointed at the local process that
  plays that service (``postgres:5432`` -> the local PostgreSQL, ``mlflow:5000`` -> the local MLflow server,
  ...), and a PostgreSQL database name at the test's own database. A URL naming a host that nothing plays
  raises :class:`ComposeError`: the file points somewhere that does not exist.
* **files**: each service gets a folder standing for its container's root. Its bind mounts and named
  volumes are symlinks in it (``/opt/airflow/dags`` -> the repository's ``dags/``, the ``mlsys-home`` volume
  -> one folder shared by every service that mounts it), its ``configs`` are files in it, and every absolute
  path of a value (``/opt/airflow/mlsys``, ``/etc/mlflow/basic_auth.ini``) is read under that root.

What a container has that a process does not (a network namespace, user policies in MinIO, a GPU) is the
test's to substitute and document; nothing here reads the test process's own environment.
"""

from __future__ import annotations

import base64
import re
import secrets
import shlex
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.test_compose import command_args, environment

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
PLACEHOLDER = "CHANGE_ME"

_REF = re.compile(
    r"\$(?:(?P<escape>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<mod>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_URL = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<userinfo>[^@/\s'\",]*@)?(?P<host>[A-Za-z0-9_.-]+)(?::(?P<port>\d+))?"
    r"(?P<path>/[^\s'\",?]*)?"
)
# an absolute path at the start of a value or after a ':' of a path list (not the '//' of a URL)
_ABS_PATH = re.compile(r"(?:^|(?<=:))/(?!/)[^\s:'\",]*")


class ComposeError(ValueError):
    """docker-compose.yaml asks for something the values or the local topology do not have."""


def load_compose(path: Path = COMPOSE_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def interpolate(text: str, values: dict[str, str], where: str = "") -> str:
    """``text`` as Compose expands it with ``values`` as its ``.env``; an unset required variable raises."""

    def expand(m: re.Match) -> str:
        if m["escape"]:
            return "$"
        name, mod, arg = m["name"] or m["bare"], m["mod"] or "", m["arg"] or ""
        present = name in values and (values[name] != "" or not mod.startswith(":"))
        if mod.endswith("-"):
            return values[name] if present else arg
        if mod.endswith("+"):
            return arg if present else ""
        if not present:
            why = arg if mod.endswith("?") else f"{name} is not set (Compose would use an empty string)"
            raise ComposeError(f"{where}: ${{{name}}}: {why}")
        return values[name]

    return _REF.sub(expand, text)


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def example_values(overrides: dict[str, str] | None = None, path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """``.env.example`` with every CHANGE_ME value replaced by a generated secret of the kind
    ``mlsys.deploy_check`` expects (a Fernet key, an Ed25519 pair, a URL-safe token), then ``overrides``."""
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    values = read_env_file(path)
    key = Ed25519PrivateKey.generate()
    made = {
        "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
        "MLSYS_MODEL_SIGNING_KEY": base64.b64encode(key.private_bytes_raw()).decode(),
        "MLSYS_MODEL_VERIFY_KEY": base64.b64encode(key.public_key().public_bytes_raw()).decode(),
    }
    for name, value in values.items():
        if PLACEHOLDER.lower() in value.lower():
            values[name] = made.get(name) or secrets.token_urlsafe(24)
    values.update(overrides or {})
    return values


def dockerfile_layout(path: Path = DOCKERFILE) -> tuple[dict[str, str], str, list[str]]:
    """The image's ``ENV`` variables, its ``WORKDIR`` and the folders its ``RUN mkdir -p`` makes there."""
    text = path.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    workdir = "/"
    folders: list[str] = []
    for line in text.splitlines():
        words = line.split(None, 1)
        if not words:
            continue
        if words[0] == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(words[1])))
        elif words[0] == "WORKDIR":
            workdir = words[1].strip()
        elif words[0] == "RUN" and (m := re.search(r"mkdir -p ([^&;]+)", words[1])):
            folders += [f if f.startswith("/") else f"{workdir}/{f}" for f in m[1].split()]
    return env, workdir, folders


@dataclass
class Localizer:
    """Turns what compose gives a service into what its local process gets.

    ``endpoints``: (compose host, port) -> local ``host:port`` of the process playing it (published ports,
    ``localhost:PORT``, included). ``databases``: compose PostgreSQL database name -> the test's database.
    ``postgres_hosts``: the compose hosts that are PostgreSQL (their URL path is a database name).
    """

    compose: dict
    values: dict[str, str]
    root: Path  # containers/<service> and volumes/<name> are made under it
    endpoints: dict[tuple[str, int], str]
    databases: dict[str, str] = field(default_factory=dict)
    postgres_hosts: tuple[str, ...] = ("postgres",)
    base_env: dict[str, str] = field(default_factory=dict)  # PATH, HOME: what the image's OS gives every process

    def __post_init__(self) -> None:
        self.image_env, self.workdir, self.image_folders = dockerfile_layout()
        self._made: set[str] = set()

    # -------------------------------------------------------------- text

    def service(self, name: str) -> dict:
        try:
            return self.compose["services"][name]
        except KeyError:
            raise ComposeError(f"docker-compose.yaml has no service {name!r}") from None

    def container_root(self, name: str) -> Path:
        return self.root / "containers" / name

    def local_urls(self, text: str, where: str) -> str:
        def rewrite(m: re.Match) -> str:
            scheme, host = m["scheme"], m["host"]
            if scheme == "s3":
                return m[0]  # a bucket, not a host
            port = int(m["port"]) if m["port"] else {"http": 80, "https": 443}.get(scheme, 0)
            local = self.endpoints.get((host, port))
            if local is None:
                raise ComposeError(f"{where}: {m[0]!r} points at {host}:{port}, which no service of the topology "
                                   f"plays (known: {sorted(f'{h}:{p}' for h, p in self.endpoints)})")
            path = m["path"] or ""
            if host in self.postgres_hosts and path:
                db = path.lstrip("/")
                if db not in self.databases:
                    raise ComposeError(f"{where}: {m[0]!r} names database {db!r}, which the postgres service does "
                                       f"not create (it makes {sorted(self.databases)})")
                path = "/" + self.databases[db]
            return f"{scheme}://{m['userinfo'] or ''}{local}{path}"

        return _URL.sub(rewrite, text)

    def local_paths(self, name: str, text: str) -> str:
        root = self.container_root(name)
        return _ABS_PATH.sub(lambda m: str(root) + m[0], text)

    def localize(self, name: str, text: str, where: str) -> str:
        return self.local_paths(name, self.local_urls(interpolate(text, self.values, where), where))

    # -------------------------------------------------------------- a service's process

    def env(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of service ``name``'s process: the OS basics, the image's ``ENV``, the service's
        ``environment`` (all localised), then ``extra`` (the test's documented substitutions)."""
        self.prepare(name)
        env = dict(self.base_env)
        env["HOME"] = self.local_paths(name, env.get("HOME", "/root"))
        env["HOSTNAME"] = name
        for key, value in self.image_env.items():
            env[key] = self.localize(name, value, f"Dockerfile ENV {key}")
        for key, value in environment(self.service(name)).items():
            env[key] = self.localize(name, value, f"service {name}, {key}")
        env.update(extra or {})
        return env

    def command(self, name: str) -> list[str]:
        """The service's command, interpolated and localised (not yet its --host/--port: see :func:`rebind`)."""
        return [self.localize(name, arg, f"service {name}, command") for arg in command_args(self.service(name))]

    def path(self, name: str, container_path: str) -> Path:
        """Where ``container_path`` of service ``name`` is on this machine."""
        self.prepare(name)
        return Path(self.local_paths(name, container_path))

    def prepare(self, name: str) -> Path:
        """Make the service's container root once: its mounts (symlinks), its configs (files), the image's folders."""
        root = self.container_root(name)
        if name in self._made:
            return root
        self._made.add(name)
        service = self.service(name)
        for entry in service.get("volumes") or []:
            source, target = self._mount(name, entry)
            link = Path(str(root) + target)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source, target_is_directory=source.is_dir())
        for entry in service.get("configs") or []:
            config = self.compose["configs"][entry["source"]]
            target = Path(str(root) + entry["target"])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self.local_urls(interpolate(config["content"], self.values, f"config {entry['source']}"),
                                              f"config {entry['source']}"))
        if service.get("build") or str(service.get("image", "")).startswith("mlsys"):
            for folder in self.image_folders:
                path = Path(str(root) + folder)
                if not path.is_symlink():
                    path.mkdir(parents=True, exist_ok=True)
        (root / self.base_env.get("HOME", "/root").lstrip("/")).mkdir(parents=True, exist_ok=True)
        Path(str(root) + self.workdir).mkdir(parents=True, exist_ok=True)
        return root

    def cwd(self, name: str) -> Path:
        self.prepare(name)
        return Path(str(self.container_root(name)) + self.workdir)

    def _mount(self, name: str, entry) -> tuple[Path, str]:
        if isinstance(entry, dict):
            source, target, kind = entry.get("source", ""), entry["target"], entry.get("type")
        else:
            source = re.match(r"(?:\$\{[^}]*\}|[^:])*", entry).group(0)
            target = entry[len(source) + 1:].split(":", 1)[0]
            kind = None
        source = interpolate(source, self.values, f"service {name}, volume {entry!r}")
        if (kind or ("bind" if source.startswith((".", "/", "~")) else "volume")) == "bind":
            path = (COMPOSE_FILE.parent / Path(source).expanduser()).resolve()
            if not path.exists():
                raise ComposeError(f"service {name}: bind mount {source!r} does not exist at {path}")
            return path, target
        volume = self.root / "volumes" / source
        volume.mkdir(parents=True, exist_ok=True)
        return volume, target


def rebind(args: list[str], host: str, port: int) -> list[str]:
    """A server command's ``--host``/``--port`` (``--flag value`` or ``--flag=value``) set to a local address."""
    out: list[str] = []
    it = iter(args)
    for arg in it:
        flag, eq, _ = arg.partition("=")
        if flag not in ("--host", "--port"):
            out.append(arg)
            continue
        value = host if flag == "--host" else str(port)
        if eq:
            out.append(f"{flag}={value}")
        else:
            next(it, None)
            out += [flag, value]
    return out


def netloc(url: str) -> str:
    """``host:port`` of a URL (what a compose hostname is mapped to)."""
    u = urllib.parse.urlsplit(url)
    return f"{u.hostname}:{u.port}"


def venv_bin() -> Path:
    return Path(sys.executable).parent
