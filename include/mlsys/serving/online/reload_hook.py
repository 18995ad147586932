"""The promotion hook: tell running `mlsys serve` instances to check their alias now.

Servers also poll the alias (``--poll-s``), so the hook only shortens the
delay after a promotion. Call it after moving ``champion``, e.g. from the
Airflow task that promotes a model::

    from mlsys.serving.online.reload_hook import notify
    notify("http://serve:8000")

It sends ``Authorization: Bearer`` with the token in ``$MLSYS_SERVE_TOKEN``
(or the file ``$MLSYS_SERVE_TOKEN_FILE`` names): the same secret the server
was started with. A 429 (a check ran moments ago) is retried once its
Retry-After has passed, within ``timeout_s``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


def notify(base_url: str, timeout_s: float = 60.0, token: str | None = None) -> dict:
    """POST {base_url}/reload; returns the server's answer. Raises on an HTTP error (e.g. 500: the load failed;
    401/403: no or the wrong token), a HTTPError whose body holds the server's reason."""
    from mlsys.serving.online.guard import TOKEN_VAR
    from mlsys.settings import secret

    if not base_url.startswith(("http://", "https://")):  # never file:// or another scheme urlopen would follow
        raise ValueError(f"serve_url={base_url!r} is not an http(s) URL; give the server's base URL, e.g. http://serve:8000")
    token = secret(TOKEN_VAR) if token is None else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout_s
    while True:
        req = urllib.request.Request(base_url.rstrip("/") + "/reload", data=b"", headers=headers, method="POST")
        try:
            # bandit B310 (urlopen of any scheme): the scheme is checked above
            with urllib.request.urlopen(req, timeout=max(1.0, deadline - time.monotonic())) as response:  # nosec B310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            wait = _retry_after(exc) if exc.code == 429 else None
            if wait is None or time.monotonic() + wait >= deadline:
                raise
            exc.close()
            time.sleep(wait)


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    try:
        return max(0.0, float(exc.headers.get("Retry-After", "")))
    except ValueError:
        return None
