"""The label stage: apply labeling functions, fit label models, mix in expert gold.

Output ``comments_labeled``: every input row, gold and weak, with

    label         hard label (0 ham, 1 spam; -1 when every LF abstained)
    label_proba   [p(ham), p(spam)]
    label_source  "gold" | "weak" | "unlabeled"
    weight        how much training should trust the row: 1.0 for gold,
                  confidence x the chosen model's accuracy on gold for weak,
                  0.0 for unlabeled rows (kept in the dataset, out of training)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from mlsys.errors import SpecError
from mlsys.ingest.stage import GOLD, UNLABELED
from mlsys.spec import require
from mlsys.storage import DatasetRef, DatasetStore

LABELED = "comments_labeled"
CARDINALITY = 2


@dataclass(frozen=True)
class LabelSpec:
    lfs: str = "mlsys.labeling.youtube_lfs"  # importable module with a module-level LFS list
    unlabeled_version: str = "latest"
    gold_version: str = "latest"
    epochs: int = 500
    seed: int = 0
    storage_uri: str = ""

    def __post_init__(self):
        require(self.epochs > 0, "LabelSpec", "epochs", self.epochs, "use a positive number of epochs")
        require(bool(self.lfs), "LabelSpec", "lfs", self.lfs, "name a module, e.g. mlsys.labeling.youtube_lfs")


@dataclass(frozen=True)
class LabelResult:
    labeled: DatasetRef
    model: str  # "label_model" or "majority_vote": whichever did better on gold
    gold_accuracy: dict[str, float]
    unlabeled_rows: int
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "labeled": self.labeled.to_json(),
            "model": self.model,
            "gold_accuracy": self.gold_accuracy,
            "unlabeled_rows": self.unlabeled_rows,
            "metrics": self.metrics,
        }


def load_lfs(module: str) -> list:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise SpecError(f"LabelSpec.lfs={module!r} cannot be imported ({exc}); give an importable module path") from exc
    lfs = getattr(mod, "LFS", None)
    if not lfs:
        raise SpecError(f"LF module {module!r} has no non-empty module-level LFS list; define LFS = [lf1, lf2, ...]")
    from snorkel.labeling import LabelingFunction

    bad = [getattr(lf, "__name__", repr(lf)) for lf in lfs if not isinstance(lf, LabelingFunction)]
    if bad:
        raise SpecError(f"LF module {module!r}: {bad} are not Snorkel labeling functions; decorate them with @labeling_function()")
    if len(lfs) < 3:
        raise SpecError(f"LF module {module!r} has {len(lfs)} LFs; the LabelModel needs at least 3")
    return list(lfs)


def run(spec: LabelSpec) -> LabelResult:
    import numpy as np
    import pandas as pd
    from snorkel.labeling import LFAnalysis, PandasLFApplier
    from snorkel.labeling.model import LabelModel, MajorityLabelVoter

    from mlsys.tracking import tracker

    store = DatasetStore(spec.storage_uri or None)
    unl_ref = store.ref(UNLABELED, spec.unlabeled_version)
    gold_ref = store.ref(GOLD, spec.gold_version)
    unlabeled, gold = store.read(UNLABELED, unl_ref.version), store.read(GOLD, gold_ref.version)
    lfs = load_lfs(spec.lfs)

    applier = PandasLFApplier(lfs)
    L_unl = applier.apply(unlabeled, progress_bar=False)
    L_gold = applier.apply(gold, progress_bar=False)
    y_gold = gold["label_true"].to_numpy()

    label_model = LabelModel(cardinality=CARDINALITY, verbose=False)
    label_model.fit(L_unl, n_epochs=spec.epochs, seed=spec.seed, progress_bar=False)
    voter = MajorityLabelVoter(cardinality=CARDINALITY)
    candidates = {"label_model": label_model, "majority_vote": voter}

    # Pick the combiner by accuracy on gold, counting abstains as wrong.
    gold_acc = {}
    for name, model in candidates.items():
        pred = model.predict(L_gold, tie_break_policy="abstain")
        gold_acc[name] = float((pred == y_gold).mean())
    chosen = max(gold_acc, key=gold_acc.get)
    proba = candidates[chosen].predict_proba(L_unl)
    covered = (L_unl != -1).any(axis=1)
    # Accuracy of the chosen model where it votes: the weak source's measured quality.
    pred_gold = candidates[chosen].predict(L_gold, tie_break_policy="abstain")
    voted = pred_gold != -1
    quality = float((pred_gold[voted] == y_gold[voted]).mean()) if voted.any() else 0.5

    weak = pd.DataFrame({"id": unlabeled["id"], "group": unlabeled["group"], "text": unlabeled["text"]})
    weak["label"] = np.where(covered, proba.argmax(axis=1), -1).astype("int64")
    weak["label_proba"] = [list(map(float, p)) for p in proba]
    weak["label_source"] = np.where(covered, "weak", "unlabeled")
    weak["weight"] = np.where(covered, proba.max(axis=1) * quality, 0.0)

    gold_rows = pd.DataFrame({"id": gold["id"], "group": gold["group"], "text": gold["text"]})
    gold_rows["label"] = y_gold.astype("int64")
    gold_rows["label_proba"] = [[1.0 - y, float(y)] for y in y_gold]
    gold_rows["label_source"] = "gold"
    gold_rows["weight"] = 1.0
    out = pd.concat([gold_rows, weak], ignore_index=True)

    labeled = store.write(
        LABELED,
        out,
        sources={UNLABELED: unl_ref.version, GOLD: gold_ref.version},
        created_by={"mlflow_run_id": tracker.active_run_id()},
        extra={"lfs": spec.lfs, "model": chosen},
    )

    lf_names = [lf.name for lf in lfs]
    summary = LFAnalysis(L_gold, lfs).lf_summary(y_gold)
    coverage_unl = LFAnalysis(L_unl, lfs).lf_summary()["Coverage"]
    summary["Coverage (unlabeled)"] = coverage_unl.values
    metrics = {
        "rows": float(len(out)),
        "weak_rows": float(covered.sum()),
        "unlabeled_rows": float((~covered).sum()),
        "coverage": float(covered.mean()),
        "gold_rows": float(len(gold)),
        "gold_accuracy_label_model": gold_acc["label_model"],
        "gold_accuracy_majority_vote": gold_acc["majority_vote"],
        "weak_quality": quality,
        "label_matrix_density": float((L_unl != -1).mean()),
    }
    _log(spec, lf_names, summary, metrics, chosen, unl_ref, gold_ref, labeled)
    return LabelResult(
        labeled=labeled,
        model=chosen,
        gold_accuracy=gold_acc,
        unlabeled_rows=int((~covered).sum()),
        metrics=metrics,
    )


def _log(spec, lf_names, summary, metrics, chosen, unl_ref, gold_ref, labeled) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from mlsys.tracking import tracker

    if mlflow.active_run() is None:
        return
    tracker.log_input(unl_ref, "unlabeled")
    tracker.log_input(gold_ref, "gold")
    tracker.log_output(labeled)
    mlflow.log_params({"lfs": spec.lfs, "n_lfs": len(lf_names), "epochs": spec.epochs, "seed": spec.seed})
    mlflow.log_param("label_combiner", chosen)
    mlflow.log_metrics(metrics)
    table = summary.reset_index().rename(columns={"index": "lf"})
    mlflow.log_table(table, "lf_summary.json")
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(lf_names) + 1))
    ax.barh(table["lf"], table["Coverage (unlabeled)"], label="coverage (unlabeled)")
    ax.barh(table["lf"], table["Emp. Acc."], alpha=0.5, label="accuracy on gold")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title("Labeling functions")
    fig.tight_layout()
    mlflow.log_figure(fig, "lf_coverage.png")
    plt.close(fig)
