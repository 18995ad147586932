"""The label stage: apply labeling functions, choose and calibrate a label model on gold, weight the rows.

Two modes, one spec:

    store mode (the DAG, ``mlsys label``): comments_unlabeled + comments_gold -> comments_labeled,
        scored on comments_test (the held-out video; never fitted on)
    file mode (``mlsys label --data PATH --lfs MODULE [--gold PATH] --out PATH``): any CSV or Parquet
        file -> a Parquet file (or folder) with the input columns plus the four below

Output ``comments_labeled``: every input row, gold and weak, with

    label         hard label (0 ham, 1 spam; -1 when every LF abstained)
    label_proba   [p(ham), p(spam)], calibrated on gold
    label_source  "gold" | "weak" | "unlabeled"
    weight        how much training should trust the row: 1.0 for gold,
                  calibrated confidence x the chosen model's accuracy on dev gold for weak,
                  0.0 for unlabeled rows (kept in the dataset, out of training)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from mlsys.datasets import CARDINALITY, COMMENTS, GOLD, LABELED, LABELED_COLUMNS, TEST, UNLABELED
from mlsys.errors import SpecError
from mlsys.faults import failpoint
from mlsys.settings import settings
from mlsys.spec import check_knobs, knob, require
from mlsys.storage import DatasetRef, DatasetStore


@dataclass(frozen=True)
class LabelSpec:
    lfs: str = knob(
        "mlsys.labeling.youtube_lfs", 'Importable module with a module-level LFS (or lfs) list of labeling functions.')
    unlabeled_version: str = "latest"
    gold_version: str = "latest"
    test_version: str = "latest"  # scored only, never fitted on; "none" skips (so does a store without it)
    epochs: int = knob(500, 'LabelModel training epochs.', minimum=1)
    seed: int = 0
    fault_tolerant: bool = knob(
        False, 'An LF that raises abstains on that row (errors are counted per LF) instead of failing the task.')
    jobs: int = knob(0, 'Worker processes for the labeling functions; 0 = one per core.', minimum=0)
    applier: str = knob(
        "fast", "Who applies the LFs: fast (ours: vectorised, `jobs` processes), dask (Snorkel's DaskLFApplier on "
        "$MLSYS_DASK_SCHEDULER, else a local cluster of `jobs` workers) or spark (Snorkel's SparkLFApplier on "
        "$MLSYS_SPARK_MASTER, else local[jobs]).", enum=["fast", "dask", "spark"])  # applier.APPLIERS
    storage_uri: str = ""
    # file mode
    data: str = ""  # a CSV or Parquet file (or Parquet folder) to label instead of the datasets
    gold: str = ""  # a CSV or Parquet file with the id column and a label column, rows of --data
    out: str = ""  # where file mode writes Parquet (a .parquet file, or a folder)
    id_column: str = "id"
    text_column: str = "text"
    label_column: str = "label"
    cardinality: int = CARDINALITY

    def __post_init__(self):
        check_knobs(self)
        require(bool(self.lfs), "LabelSpec", "lfs", self.lfs, "name a module, e.g. mlsys.labeling.youtube_lfs")
        require(self.cardinality >= 2, "LabelSpec", "cardinality", self.cardinality, "use 2 or more classes")
        require(bool(self.out) or not self.data, "LabelSpec", "out", self.out,
                "file mode (--data) needs --out PATH for the labeled Parquet")
        require(bool(self.data) or not (self.gold or self.out), "LabelSpec", "data", self.data,
                "--gold and --out are for file mode: also pass --data PATH")
        require(bool(self.id_column) and bool(self.text_column), "LabelSpec", "id_column/text_column",
                (self.id_column, self.text_column), "name the id and text columns")
        conf = settings()
        require(conf.lf_module_allowed(self.lfs), "LabelSpec", "lfs", self.lfs,
                f"name a module under the allowed prefixes {list(conf.lf_modules)}, or add its prefix to "
                f"MLSYS_LF_MODULES (comma-separated)")
        for name in ("data", "gold", "out"):
            path = getattr(self, name)
            require(not path or conf.in_data_roots(path), "LabelSpec", name, path,
                    f"give a path under the data roots {[str(r) for r in conf.data_roots]}, or add its folder to "
                    f"MLSYS_DATA_ROOTS (':'-separated)")


@dataclass(frozen=True)
class LabelResult:
    labeled: DatasetRef | None  # store mode: the comments_labeled version written
    model: str  # the combiner chosen on dev gold: label_model, majority_vote or gold_weighted_vote
    gold_accuracy: dict[str, float]  # each candidate's accuracy on the dev half of the gold
    unlabeled_rows: int
    metrics: dict[str, float] = field(default_factory=dict)
    out: str = ""  # file mode: the Parquet written
    lf_errors: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "labeled": self.labeled.to_json() if self.labeled else None,
            "out": self.out,
            "model": self.model,
            "gold_accuracy": self.gold_accuracy,
            "unlabeled_rows": self.unlabeled_rows,
            "lf_errors": self.lf_errors,
            "metrics": self.metrics,
        }


def load_lfs(module: str) -> list:
    """The LFs of an importable module: its list ``lfs`` (or ``LFS``), each a Snorkel labeling function.

    Only modules under MLSYS_LF_MODULES' prefixes are imported: importing runs the module's code.
    """
    allowed = settings().lf_modules
    if not settings().lf_module_allowed(module):
        raise SpecError(f"LabelSpec.lfs={module!r} is not under the allowed LF module prefixes {list(allowed)}; "
                        f"put it in one (e.g. lfs.{module.rsplit('.', 1)[-1]}) or add its prefix to MLSYS_LF_MODULES")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise SpecError(f"LabelSpec.lfs={module!r} cannot be imported ({exc}); give an importable module path") from exc
    lfs = getattr(mod, "lfs", None) or getattr(mod, "LFS", None)
    if not lfs:
        raise SpecError(f"LF module {module!r} has no non-empty module-level list of LFs; "
                        f"define lfs = [lf1, lf2, ...] (or LFS = [...])")
    from snorkel.labeling import LabelingFunction

    bad = [getattr(lf, "__name__", repr(lf)) for lf in lfs if not isinstance(lf, LabelingFunction)]
    if bad:
        raise SpecError(f"LF module {module!r}: {bad} are not Snorkel labeling functions; decorate them with "
                        f"@labeling_function() or @vectorized_lf() (mlsys.labeling.lf)")
    if len(lfs) < 3:
        raise SpecError(f"LF module {module!r} has {len(lfs)} LFs; the LabelModel needs at least 3")
    return list(lfs)


def run(spec: LabelSpec) -> LabelResult:
    lfs = load_lfs(spec.lfs)
    return _run_file(spec, lfs) if spec.data else _run_store(spec, lfs)


def _label(spec: LabelSpec, lfs, data, gold, test, label_column: str):
    from mlsys.labeling.labeler import label_frame

    return label_frame(data, lfs, gold, id_column=spec.id_column, text_column=spec.text_column,
                       label_column=label_column, cardinality=spec.cardinality, epochs=spec.epochs,
                       seed=spec.seed, fault_tolerant=spec.fault_tolerant, n_jobs=spec.jobs or None, test=test,
                       applier=spec.applier)


def _inputs(store: DatasetStore, spec: LabelSpec) -> tuple[DatasetRef, DatasetRef]:
    """The unlabeled pool and the gold set: the versions named, else both from the latest ingest snapshot, so
    they always come from one ingest (a stage started between two ingests never mixes them)."""
    from mlsys.errors import StorageError

    if spec.unlabeled_version == spec.gold_version == "latest":
        try:
            snapshot = store.snapshot(f"{COMMENTS}@latest")
        except StorageError:  # data ingested before snapshots existed
            snapshot = None
        if snapshot is not None and UNLABELED in snapshot.members and GOLD in snapshot.members:
            return store.ref(UNLABELED, snapshot.version(UNLABELED)), store.ref(GOLD, snapshot.version(GOLD))
    return store.ref(UNLABELED, spec.unlabeled_version), store.ref(GOLD, spec.gold_version)


def _run_store(spec: LabelSpec, lfs) -> LabelResult:
    import pandas as pd

    from mlsys.tracking import tracker

    store = DatasetStore(spec.storage_uri or None)
    unl_ref, gold_ref = _inputs(store, spec)
    unlabeled, gold = store.read(UNLABELED, unl_ref.version), store.read(GOLD, gold_ref.version)
    test_ref = None
    if spec.test_version.lower() != "none" and (spec.test_version != "latest" or store.versions(TEST)):
        test_ref = store.ref(TEST, spec.test_version)
    test = store.read(TEST, test_ref.version) if test_ref else None

    data = pd.concat([gold.drop(columns=["label_true"]), unlabeled], ignore_index=True)
    labeled, report = _label(spec, lfs, data, gold[[spec.id_column, "label_true"]], test, "label_true")
    out = labeled[LABELED_COLUMNS]
    ref = store.write(
        LABELED,
        out,
        sources={UNLABELED: unl_ref.version, GOLD: gold_ref.version},
        created_by={"mlflow_run_id": tracker.active_run_id()},
        extra={"lfs": spec.lfs, "model": report.chosen, **report.priors()},
    )
    failpoint("label.written")  # the fault suite kills the task here: the retry must write the same version
    _log(spec, report, inputs={"unlabeled": unl_ref, "gold": gold_ref, "test": test_ref}, output=ref)
    return _result(report, labeled=ref)


def _run_file(spec: LabelSpec, lfs) -> LabelResult:
    from mlsys.storage.table_file import read_frame, write_table

    data = read_frame(spec.data, spec.id_column, "--data")
    gold = read_frame(spec.gold, spec.id_column, "--gold") if spec.gold else None
    labeled, report = _label(spec, lfs, data, gold, None, spec.label_column)
    out = write_table(labeled, spec.out)
    _log(spec, report, inputs={}, output=None)
    return _result(report, out=out)


def _result(report, labeled: DatasetRef | None = None, out: str = "") -> LabelResult:
    return LabelResult(labeled=labeled, model=report.chosen, gold_accuracy=report.dev_accuracy,
                       unlabeled_rows=int(report.metrics["unlabeled_rows"]), metrics=report.metrics, out=out,
                       lf_errors=report.lf_errors)


def _log(spec: LabelSpec, report, inputs: dict, output: DatasetRef | None) -> None:
    import mlflow

    from mlsys.labeling.analysis import log_analysis
    from mlsys.tracking import tracker

    if mlflow.active_run() is None:
        return
    for context, ref in inputs.items():
        if ref is not None:
            tracker.log_input(ref, context)
    if output is not None:
        tracker.log_output(output)
    mlflow.log_params({"lfs": spec.lfs, "n_lfs": len(report.lf_table), "epochs": spec.epochs, "seed": spec.seed,
                       "fault_tolerant": spec.fault_tolerant, "label_combiner": report.chosen,
                       "calibrated": report.calibrated, "quality_source": report.quality_source,
                       "class_balance_source": report.class_balance_source})
    if spec.data:
        mlflow.log_params({"data": spec.data, "gold": spec.gold, "out": spec.out})
    mlflow.log_metrics(report.metrics)
    if report.lf_errors:
        mlflow.log_dict({"errors": report.lf_errors, "first": report.lf_first_errors}, "lf_errors.json")
    log_analysis(report.lf_table)
