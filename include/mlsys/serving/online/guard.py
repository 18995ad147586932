"""Who may call ``mlsys serve``, and how often: the bearer token and the /reload throttle.

    request --> admin endpoint (POST /reload), or /predict under --predict-auth?
                  no server token .................................. 403  (fail closed: set MLSYS_SERVE_TOKEN)
                  no / malformed / wrong ``Authorization: Bearer`` .. 401 + WWW-Authenticate: Bearer
            --> /reload: a check running, or one started < --reload-interval-s ago ... 429 + Retry-After
            --> the registry round trip

The token is read once at start from ``MLSYS_SERVE_TOKEN`` or the file that
``MLSYS_SERVE_TOKEN_FILE`` names (``mlsys.settings.secret``); rotating it means
restarting the server with the new one. /health, /ready and /metrics stay open:
they change nothing, and probes and Prometheus scrape them without credentials.
"""

from __future__ import annotations

import hmac
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_VAR = "MLSYS_SERVE_TOKEN"
PREDICT_AUTH_VAR = "MLSYS_SERVE_PREDICT_AUTH"
MIN_TOKEN_CHARS = 16
NEW_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
_PLACEHOLDER = re.compile(r"change[-_ ]?me", re.IGNORECASE)
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}


@dataclass(frozen=True)
class Denied:
    """A refused request: its status, headers and JSON body."""

    status: int
    body: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)


def check_token(token: str) -> str:
    """``token`` if it is fit to guard the server; a ValueError naming what is wrong (never the token itself)."""
    source = f"{TOKEN_VAR} (or the file {TOKEN_VAR}_FILE names)"
    if _PLACEHOLDER.search(token):
        raise ValueError(f"{source} is a placeholder (it contains 'change me'); set a random token: {NEW_TOKEN}")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{source} is {len(token)} characters, under the minimum of {MIN_TOKEN_CHARS}; "
                         f"set a random token: {NEW_TOKEN}")
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ValueError(f"{source} holds whitespace or characters outside printable ASCII, which an HTTP header "
                         f"cannot carry as sent; set a random token: {NEW_TOKEN}")
    return token


class BearerAuth:
    """Checks ``Authorization: Bearer <token>`` against the server's token in constant time."""

    REALM = 'Bearer realm="mlsys serve"'

    def __init__(self, token: str = ""):
        self._token = check_token(token).encode() if token else b""

    @classmethod
    def from_env(cls) -> BearerAuth:
        from mlsys.settings import secret

        return cls(secret(TOKEN_VAR))

    @property
    def configured(self) -> bool:
        return bool(self._token)

    def check(self, authorization: str | bytes | None) -> Denied | None:
        """None when ``authorization`` (the header's value) carries the token; else why not, as a response."""
        if not self._token:
            return Denied(403, _error(f"this server has no token, so its admin endpoints are closed; start it with "
                                      f"{TOKEN_VAR} or {TOKEN_VAR}_FILE set, and give its callers the same token"))
        if isinstance(authorization, str):
            authorization = authorization.encode("latin-1", errors="replace")  # what the client sent, byte for byte
        scheme, _, given = (authorization or b"").strip().partition(b" ")
        if not scheme:
            return Denied(401, _error("missing; send 'Authorization: Bearer <token>' with the server's "
                                      f"{TOKEN_VAR}"), {"WWW-Authenticate": self.REALM})
        if scheme.lower() != b"bearer":
            named = f"scheme {scheme.decode()!r} is not accepted" if scheme.isalpha() and len(scheme) <= 12 else (
                "the value does not start with 'Bearer '")  # never echo what may be a credential
            return Denied(401, _error(f"{named}; send 'Authorization: Bearer <token>'"),
                          {"WWW-Authenticate": self.REALM + ', error="invalid_request"'})
        if not hmac.compare_digest(given.strip(), self._token):
            return Denied(401, _error(f"the bearer token is not this server's; send the value of its {TOKEN_VAR}"),
                          {"WWW-Authenticate": self.REALM + ', error="invalid_token"'})
        return None


def _error(message: str) -> dict[str, str]:
    return {"error": f"Authorization: {message}", "field": "Authorization"}


def predict_auth_from_env() -> bool:
    """``$MLSYS_SERVE_PREDICT_AUTH`` as a bool (unset: false)."""
    value = os.environ.get(PREDICT_AUTH_VAR, "").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"{PREDICT_AUTH_VAR}={os.environ[PREDICT_AUTH_VAR]!r} is not a boolean; "
                         "set it to true or false (or pass --predict-auth / --no-predict-auth)")
    return value in _TRUE


class ReloadThrottle:
    """At most one registry check per ``interval_s``, and never two at once (interval 5 s)::

        t=0.0  /reload  admitted; the check runs until t=0.8     the window is [0, 5)
        t=0.3  /reload  429, Retry-After: 5   (a check is running)
        t=2.0  /reload  429, Retry-After: 3
        t=5.0  /reload  admitted

    ``admit`` and ``done`` may be called from any thread: ``done`` is called by
    the thread that ran the check, so a check that outlives its request still
    holds the slot until it ends.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        if interval_s < 0:
            raise ValueError(f"reload_interval_s={interval_s!r} is negative; use 0 (one at a time) or more seconds")
        self.interval_s, self._clock = interval_s, clock
        self._lock = threading.Lock()
        self._started: float | None = None
        self._running = False

    def admit(self) -> int | None:
        """None: go, and call ``done`` when the check ends; else the seconds to wait (Retry-After)."""
        with self._lock:
            now = self._clock()
            left = 0.0 if self._started is None else self._started + self.interval_s - now
            if self._running or left > 0:
                return max(1, math.ceil(left))
            self._started, self._running = now, True
            return None

    def done(self) -> None:
        with self._lock:
            self._running = False


def local_token_file(home: Path) -> Path:
    """``home/secrets/serve-token``, created once with a random token (mode 0600), for a stack on one machine.

    The embedded stack points ``MLSYS_SERVE_TOKEN_FILE`` at it for both sides:
    ``mlsys serve`` and the evaluate stage that calls its /reload.
    """
    from mlsys.settings import local_secret

    return local_secret(Path(home) / "secrets" / "serve-token", lambda: secrets.token_urlsafe(32))


def use_local_token(env: dict[str, str], home: Path) -> dict[str, str]:
    """``env`` with ``MLSYS_SERVE_TOKEN_FILE`` set to ``local_token_file(home)``, unless a token is given already."""
    if not env.get(TOKEN_VAR) and not env.get(f"{TOKEN_VAR}_FILE"):
        env[f"{TOKEN_VAR}_FILE"] = str(local_token_file(home))
    return env
