"""The promotion hook: tell running `mlsys serve` instances to check their alias now.

Servers also poll the alias (``--poll-s``), so the hook only shortens the
delay after a promotion. Call it after moving ``champion``, e.g. from the
Airflow task that promotes a model::

    from mlsys.serving.online.reload_hook import notify
    notify("http://serve:8000")
"""

from __future__ import annotations

import json
import urllib.request


def notify(base_url: str, timeout_s: float = 60.0) -> dict:
    """POST {base_url}/reload; returns the server's answer. Raises on an HTTP error (e.g. 500: the load failed)."""
    req = urllib.request.Request(base_url.rstrip("/") + "/reload", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=timeout_s) as response:
        return json.loads(response.read())
