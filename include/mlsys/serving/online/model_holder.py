"""The served model: a registered alias, loaded, swapped atomically when the alias moves.

A poller thread checks the alias every ``poll_s`` seconds; ``refresh`` (the
server's POST /reload) checks now. A new version loads beside the old one, and
one reference assignment swaps them, so requests in flight finish on the old
model and none is dropped. A version that fails to load is logged and the old
model keeps serving; it is retried at the next check.

Every check (a registry round trip, and a load when the alias moved) runs on the
poller thread or, for POST /reload, on an executor thread: never on the event loop.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from mlsys.serving import champion
from mlsys.serving.scorer import Scorer

log = logging.getLogger("mlsys.serve")


@dataclass(frozen=True)
class RefreshResult:
    version: str | None  # the label serving now, e.g. "name/3"
    changed: bool
    error: str | None = None


class ModelHolder:
    def __init__(self, name: str, alias: str, poll_s: float = 10.0):
        self.name, self.alias, self.poll_s = name, alias, poll_s
        self.scorer: Scorer | None = None
        self.reloads: dict[str, int] = {"ok": 0, "failed": 0}
        self.last_error: str | None = None
        self.on_first_load: Callable[[], None] | None = None  # called on the loading thread after the first swap
        self._lock = threading.Lock()  # one load at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def label(self) -> str | None:
        scorer = self.scorer
        return scorer.label if scorer else None

    def refresh(self) -> RefreshResult:
        """Load the alias's version if it is not the one serving; on failure keep serving the old one."""
        with self._lock:
            try:
                ref = champion.resolve(self.name, self.alias)
                if self.scorer is not None and self.scorer.label == ref.label:
                    return RefreshResult(self.label, changed=False)
                scorer = champion.load(ref)
            except Exception as exc:  # noqa: BLE001 - the server must keep serving; logged and reported, not swallowed
                self.reloads["failed"] += 1
                error = f"{type(exc).__name__}: {exc}"
                if self.scorer is None and _no_such_alias(exc):  # a fresh registry: no champion yet, not a failure
                    if error != self.last_error:
                        log.info("no %s@%s yet (%s); /ready stays 503 until one is promoted", self.name, self.alias, exc)
                else:
                    log.exception("reload of %s@%s failed; still serving %s", self.name, self.alias, self.label)
                self.last_error = error
                return RefreshResult(self.label, changed=False, error=self.last_error)
            old = self.label
            self.scorer = scorer  # the swap: one reference assignment
            self.reloads["ok"] += 1
            self.last_error = None
            log.warning("now serving %s (was %s)", scorer.label, old)
            if old is None and self.on_first_load is not None:
                self.on_first_load()
            return RefreshResult(self.label, changed=True)

    def start_polling(self) -> None:
        self._thread = threading.Thread(target=self._poll, daemon=True, name="mlsys-alias-poll")
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s if self.scorer is not None else min(self.poll_s, 2.0)):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()


def _no_such_alias(exc: Exception) -> bool:
    """MLflow's answer for a model or alias that does not exist (yet)."""
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and "not found" in str(exc).lower() or \
        code == "RESOURCE_DOES_NOT_EXIST"
