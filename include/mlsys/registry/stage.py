"""The evaluate-and-register stage: the champion/challenger gate.

    read the champion's version V               fails closed: only "no such model/alias" means no champion
    new model --register--> version N, alias "challenger"
    score challenger and champion V (by version) on the same held-out test split
    challenger beats champion on the gate metric (or no champion yet)
        --> alias "champion" moves to version N, by compare-and-set against V (registry/gate.py)
        --> POST {serve_url}/reload, if a server is configured ($MLSYS_SERVE_URL)

The reload call only shortens the delay: servers also poll the alias. So a
failed call does not undo the promotion (the alias has moved, and a retry of
the task would register the model again); it is logged as an error, tagged on
the MLflow run and returned in the result.
"""

from __future__ import annotations

import http.client
import logging
from dataclasses import dataclass, field
from typing import Any

from mlsys.datasets import CHALLENGER, LABELED, TEST
from mlsys.faults import failpoint
from mlsys.settings import settings
from mlsys.spec import check_knobs, knob, require
from mlsys.storage import DatasetRef, DatasetStore

METRICS = ("accuracy", "precision", "recall", "f1")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateSpec:
    model_uri: str = ""  # the trained model (runs:/... or models:/...)
    model_name: str = ""  # registered model name; default $MLSYS_MODEL_NAME
    test_version: str = "latest"
    gate_metric: str = knob("f1", 'Metric the challenger must beat the champion on (test split).', enum=list(METRICS))
    storage_uri: str = ""
    serve_url: str = ""  # `mlsys serve` to tell to reload after a promotion; default $MLSYS_SERVE_URL ("" = none)

    def __post_init__(self):
        check_knobs(self)
        require(bool(self.model_uri), "EvaluateSpec", "model_uri", self.model_uri, "pass the train stage's model_uri")
        url = self.reload_url
        require(not url or url.startswith(("http://", "https://")), "EvaluateSpec", "serve_url", url,
                "give the server's base URL (the serve_url param or $MLSYS_SERVE_URL), e.g. http://serve:8000, "
                "or leave both empty for no reload call")

    @property
    def name(self) -> str:
        return self.model_name or settings().model_name

    @property
    def reload_url(self) -> str:
        return (self.serve_url or settings().serve_url).rstrip("/")


@dataclass(frozen=True)
class EvaluateResult:
    model_name: str
    version: str
    promoted: bool
    champion_version: str
    test: DatasetRef
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    serve_reload: dict[str, Any] = field(default_factory=dict)  # {} when no server was told; else url, ok, answer/error

    def to_json(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "version": self.version, "promoted": self.promoted,
                "champion_version": self.champion_version, "test": self.test.to_json(),
                "challenger_metrics": self.challenger_metrics, "champion_metrics": self.champion_metrics,
                "serve_reload": self.serve_reload}


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """Binary metrics with 1 (spam) as the positive class."""
    import numpy as np

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    tp = float(((y_pred == 1) & (y_true == 1)).sum())
    fp = float(((y_pred == 1) & (y_true == 0)).sum())
    fn = float(((y_pred == 0) & (y_true == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float((y_true == y_pred).mean()), "precision": precision, "recall": recall, "f1": f1}


def _score(model_uri: str, test) -> dict[str, float]:
    """Metrics of the model at ``model_uri`` on ``test``; its files are read and their signature checked, no pickle."""
    from mlsys.serving.champion import load_uri

    scores = load_uri(model_uri).score_texts(test["text"].astype(str).tolist())
    return classification_metrics(test["label_true"].to_numpy(), scores.prediction)


def _reload_server(url: str, model: str, version: str) -> dict[str, Any]:
    """Tell the server at ``url`` that ``model``'s champion moved to ``version``; never raises on a failed call.

    The promotion stands either way (the server polls the alias too), so a
    failure is reported, not raised: logged as an error and returned.
    """
    from mlsys.serving.online.reload_hook import notify

    try:
        answer = notify(url)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts, bad JSON
        detail = f"{type(exc).__name__}: {exc}"
        if hasattr(exc, "read"):  # an HTTPError: the server's own reason, e.g. the new version failed to load
            try:
                detail += f" {exc.read().decode(errors='replace')[:500]}"
            except OSError:
                pass
        log.error("%s version %s is champion, but telling the server at %s to reload failed (%s); "
                  "the server keeps its current model until its next poll of the alias", model, version, url, detail)
        return {"url": url, "ok": False, "error": detail}
    log.info("told the server at %s to reload %s version %s: %s", url, model, version, answer)
    return {"url": url, "ok": True, "answer": answer}


def _register(client, model_uri: str, name: str):
    """Register ``model_uri`` under ``name`` once: a retry finds the version its killed attempt registered."""
    import mlflow

    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.source == model_uri:
            log.info("%s is already version %s of %s (an earlier attempt registered it)", model_uri, mv.version, name)
            return mv
    return mlflow.register_model(model_uri, name)


def _test_split(store: DatasetStore, spec: EvaluateSpec, client):
    """The test split to score on: the one named, else the test split of the ingest snapshot the model was trained
    on (so a later ingest with another test group never makes the gate score a model on rows it trained on), else
    the latest (a model trained outside the pipeline)."""
    import mlflow

    if spec.test_version != "latest":
        return store.ref(TEST, spec.test_version)
    from mlsys.errors import StorageError

    run_id = mlflow.models.get_model_info(spec.model_uri).run_id
    trained_on = client.get_run(run_id).data.tags.get(f"mlsys.input.{LABELED}") if run_id else None
    if not trained_on:
        log.warning("%s names no %s version it was trained on: scoring on %s@latest", spec.model_uri, LABELED, TEST)
        return store.ref(TEST, "latest")
    try:
        snapshot = store.snapshot_of(LABELED, trained_on)
    except StorageError as exc:  # data written before ingest snapshots existed
        log.warning("%s@%s descends from no ingest snapshot (%s): scoring on %s@latest", LABELED, trained_on, exc, TEST)
        return store.ref(TEST, "latest")
    return store.ref(TEST, snapshot.id)


def run(spec: EvaluateSpec) -> EvaluateResult:
    import mlflow

    from mlsys.registry import gate as gates
    from mlsys.tracking import tracker

    tracker.configure()
    client = mlflow.MlflowClient()
    current = gates.champion_version(client, spec.name)  # first: an unreadable champion stops everything
    store = DatasetStore(spec.storage_uri or None)
    test_ref = _test_split(store, spec, client)
    test = store.read(TEST, test_ref.version)

    challenger = _score(spec.model_uri, test)
    mv = _register(client, spec.model_uri, spec.name)
    client.set_registered_model_alias(spec.name, CHALLENGER, mv.version)
    failpoint("evaluate.registered")  # the fault suite kills the task here: the retry must not register again
    for k, v in challenger.items():
        client.set_model_version_tag(spec.name, mv.version, f"test_{k}", f"{v:.4f}")
    client.set_model_version_tag(spec.name, mv.version, "test_dataset", test_ref.label)

    gate = spec.gate_metric
    decision = gates.promote_if_better(client, spec.name, str(mv.version), challenger, gate, current,
                                       lambda uri: _score(uri, test))
    promoted, champion = decision.promoted, decision.champion_metrics
    champion_version = decision.champion_version
    serve_reload = _reload_server(spec.reload_url, spec.name, str(mv.version)) if promoted and spec.reload_url else {}

    if mlflow.active_run() is not None:
        tracker.log_input(test_ref, "test")
        mlflow.log_metrics({f"challenger_{k}": v for k, v in challenger.items()})
        mlflow.log_metrics({f"champion_{k}": v for k, v in champion.items()})
        mlflow.log_params({"model_name": spec.name, "model_version": mv.version, "gate_metric": gate})
        mlflow.set_tags({"mlsys.promoted": str(promoted), "mlsys.champion_version": str(champion_version),
                         "mlsys.gate_rounds": str(decision.rounds)})
        if serve_reload:
            mlflow.set_tag("mlsys.serve_reload", "ok" if serve_reload["ok"] else f"failed: {serve_reload['error']}"[:5000])
    return EvaluateResult(
        model_name=spec.name, version=str(mv.version), promoted=promoted, champion_version=str(champion_version),
        test=test_ref, challenger_metrics=challenger, champion_metrics=champion, serve_reload=serve_reload,
    )
