"""The champion alias, moved safely: read failing closed, compare-and-set, re-score after a lost race.

    V = champion_version()                     None only when MLflow says "no such model" or "no such alias";
                                               any other error (5xx, timeout, permission) raises GateError
    repeat (at most MAX_ROUNDS times):
        score champion V by its version        models:/<name>/V, never @champion (that re-resolves the alias)
        challenger not better than V           -> stop: champion stays V
        re-read the alias (compare)            still V   -> set it to the challenger (and set), stop
                                               moved to W -> V = W, score W, decide again

Promotion is one critical section across DAGs: every evaluate task runs in the Airflow pool
PROMOTION_POOL of one slot (created by ``mlsys up``/``mlsys demo`` and docker-compose's init), and the
compare-and-set above guards what the pool does not cover (a CLI ``mlsys evaluate`` beside the DAGs,
``airflow dags test``, which ignores pools). MLflow has no conditional alias update, so the window between
the re-read and the set is one round trip; see docs/guarantees.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlsys.datasets import CHAMPION
from mlsys.errors import MlsysError

PROMOTION_POOL = "mlsys_promotion"  # the Airflow pool of every evaluate task: one promotion at a time
PROMOTION_POOL_SLOTS = 1
PROMOTION_POOL_DESCRIPTION = "One evaluate task at a time may move the champion alias (mlsys.registry.gate)"

MAX_ROUNDS = 5  # lost races in a row before the gate gives up (raises; Airflow retries the task)

# MLflow's answer when the registered model does not exist. A missing alias on an existing model is not an
# error here: the gate reads the model's alias map (get_registered_model), so it needs no error-message parsing
# (get_model_version_by_alias answers a missing alias with INVALID_PARAMETER_VALUE, the code of any bad request).
MISSING = "RESOURCE_DOES_NOT_EXIST"

log = logging.getLogger(__name__)

# Test seam: called as hook(model_name, challenger_version, champion_version_read) after the gate decided to
# promote and before its compare-and-set. The race tests hold one promotion here to force an interleaving.
before_compare_and_set: list[Callable[[str, str, str | None], None]] = []


class GateError(MlsysError):
    """The gate could not decide safely (the champion unreadable, or it kept moving): nothing was promoted."""


@dataclass(frozen=True)
class Decision:
    promoted: bool
    champion_version: str | None  # the champion after the gate (None: there is none, and nothing was promoted)
    champion_metrics: dict[str, float] = field(default_factory=dict)  # the champion last compared against
    rounds: int = 1  # 1 + the races lost on the way


def champion_version(client: Any, name: str) -> str | None:
    """The version the champion alias of ``name`` points at; None if the model or the alias does not exist.

    Every other failure raises GateError: a champion that cannot be read is never taken as "no champion".
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == MISSING:
            return None
        raise GateError(
            f"could not read the {CHAMPION!r} alias of registered model {name!r} ({exc.error_code}: {exc}); "
            "nothing was promoted (the gate fails closed); the task fails and Airflow retries it") from exc
    version = (model.aliases or {}).get(CHAMPION)
    return None if version is None else str(version)


def promote_if_better(client: Any, name: str, version: str, challenger: dict[str, float], metric: str,
                      champion: str | None, score: Callable[[str], dict[str, float]]) -> Decision:
    """Move the champion alias of ``name`` to ``version`` if its ``challenger`` metrics beat the champion's.

    ``champion`` is the version read when the evaluation started; ``score(model_uri)`` scores a model on the
    same test split. A tie never moves the champion, and neither does a lost race: the gate re-scores against
    the version that won it and decides again.
    """
    scores: dict[str, dict[str, float]] = {}
    for rounds in range(1, MAX_ROUNDS + 1):
        if champion is not None and champion not in scores:
            scores[champion] = score(f"models:/{name}/{champion}")
        current = scores.get(champion, {}) if champion is not None else {}
        if champion is not None and not challenger[metric] > current[metric]:
            return Decision(False, champion, current, rounds)
        for hook in before_compare_and_set:
            hook(name, version, champion)
        now = champion_version(client, name)  # compare ...
        if now != champion:
            log.warning("the champion of %s moved from version %s to %s while version %s was evaluated: "
                        "re-scoring against version %s", name, champion, now, version, now)
            champion = now
            continue
        client.set_registered_model_alias(name, CHAMPION, version)  # ... and set
        log.info("%s: champion moved from version %s to %s (%s %.4f > %s)", name, champion, version, metric,
                 challenger[metric], f"{current[metric]:.4f}" if current else "no champion")
        return Decision(True, version, current, rounds)
    raise GateError(f"the champion of {name} moved {MAX_ROUNDS} times while version {version} was evaluated; "
                    "gave up without promoting it; the task fails and Airflow retries it")
