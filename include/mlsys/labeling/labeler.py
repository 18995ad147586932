"""The Python API: label a DataFrame with a list of LFs and optional gold.

    from mlsys.labeling import label_frame, youtube_lfs
    labeled, report = label_frame(df, youtube_lfs.lfs, gold=gold_df)   # gold: id + label
    report.lf_table          # coverage, overlap, conflict, accuracy on gold, learned weights per LF
    report.metrics           # rows, coverage, density, dev/test accuracies, ...

``labeled`` is ``df`` plus four columns:

    label         hard label (-1 where every LF abstained)
    label_proba   class probabilities (calibrated on gold when there is gold)
    label_source  "gold" (the row is in the gold set), "weak", or "unlabeled" (every LF abstained)
    weight        how much training should trust the row: 1.0 for gold; calibrated confidence x the
                  measured quality of the weak source for weak rows; 0.0 for unlabeled rows
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from mlsys.errors import DataError
from mlsys.labeling.applier import make_applier
from mlsys.labeling.label_model import CANDIDATES, GoldAwareLabelModel

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

OUTPUT_COLUMNS = ("label", "label_proba", "label_source", "weight")


@dataclass
class LabelReport:
    chosen: str
    metrics: dict[str, float]
    lf_table: "pd.DataFrame"
    dev_accuracy: dict[str, float] = field(default_factory=dict)
    test_accuracy: dict[str, float] = field(default_factory=dict)
    lf_errors: dict[str, int] = field(default_factory=dict)
    lf_first_errors: dict[str, str] = field(default_factory=dict)
    calibrated: bool = False
    quality_source: str = ""
    class_balance: list[float] = field(default_factory=list)  # P(y) of the corpus
    class_balance_source: str = ""  # gold, or label_model without gold
    uncovered_proba: list[float] = field(default_factory=list)  # P(y | every LF abstains)

    def priors(self) -> dict[str, Any]:
        """What the end model needs of the label stage's estimates (stored with the labeled dataset)."""
        return {"class_balance": self.class_balance, "class_balance_source": self.class_balance_source,
                "uncovered_proba": self.uncovered_proba, "weak_quality": self.metrics.get("weak_quality")}

    def to_json(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "metrics": self.metrics, "dev_accuracy": self.dev_accuracy,
                "test_accuracy": self.test_accuracy, "lf_errors": self.lf_errors,
                "lf_first_errors": self.lf_first_errors, "calibrated": self.calibrated,
                "quality_source": self.quality_source, **self.priors(),
                "lfs": self.lf_table.to_dict(orient="records")}


def check_frame(df: "pd.DataFrame", what: str, id_column: str, text_column: str) -> "pd.DataFrame":
    """Errors for a missing id/text column, duplicate ids, non-text or non-UTF-8 values; adds a ``text`` alias."""
    for col, flag in ((id_column, "id_column"), (text_column, "text_column")):
        if col not in df.columns:
            raise DataError(f"{what}: no column {col!r}; found {list(df.columns)}. Pass the right {flag} "
                            f"(--{flag.replace('_', '-')})")
    dupes = df[id_column][df[id_column].duplicated()]
    if len(dupes):
        raise DataError(f"{what}: ids must be unique; {dupes.head(5).tolist()} appear more than once")
    text = df[text_column]
    if text.isna().any():
        raise DataError(f"{what}: column {text_column!r} is empty in rows with id "
                        f"{df.loc[text.isna(), id_column].head(5).tolist()}; fill or drop them")
    raw = text.map(lambda v: isinstance(v, (bytes, bytearray)))
    if raw.any():  # bytes from a binary Parquet column: must be UTF-8
        decoded = []
        for ident, value in zip(df[id_column], text):
            if isinstance(value, (bytes, bytearray)):
                try:
                    value = bytes(value).decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{what}: column {text_column!r} of row id {ident!r} is not UTF-8 "
                                    f"({exc.reason} at byte {exc.start}); re-encode the data as UTF-8") from exc
            decoded.append(value)
        df = df.assign(**{text_column: decoded})
    bad = df[text_column].map(lambda v: not isinstance(v, str))
    if bad.any():
        raise DataError(f"{what}: column {text_column!r} must hold text; row id "
                        f"{df.loc[bad, id_column].iloc[0]!r} holds {df.loc[bad, text_column].iloc[0]!r}")
    if text_column != "text" and "text" not in df.columns:
        df = df.assign(text=df[text_column])  # the shipped LFs read x.text
    return df


def check_gold(gold: "pd.DataFrame", data_ids: "pd.Series | None", id_column: str, label_column: str,
               cardinality: int, what: str = "gold") -> "np.ndarray":
    """The gold labels as int64, or a DataError naming unknown ids, unknown classes or a missing column."""
    import numpy as np
    import pandas as pd

    for col in (id_column, label_column):
        if col not in gold.columns:
            raise DataError(f"{what}: no column {col!r}; found {list(gold.columns)}. The gold file needs the "
                            f"id column and a {label_column!r} column")
    if gold[id_column].duplicated().any():
        raise DataError(f"{what}: ids {gold[id_column][gold[id_column].duplicated()].head(5).tolist()} "
                        f"appear more than once; give each row one gold label")
    if data_ids is not None:
        unknown = ~gold[id_column].isin(data_ids)
        if unknown.any():
            raise DataError(f"{what}: {int(unknown.sum())} id(s) are not in the data, e.g. "
                            f"{gold.loc[unknown, id_column].head(5).tolist()}; gold must label rows of the data")
    labels = pd.to_numeric(gold[label_column], errors="coerce")
    ok = labels.notna() & labels.isin(range(cardinality))
    if not ok.all():
        raise DataError(f"{what}: column {label_column!r} holds values outside the classes 0..{cardinality - 1}: "
                        f"{gold.loc[~ok, label_column].head(5).tolist()} (ids "
                        f"{gold.loc[~ok, id_column].head(5).tolist()})")
    return labels.to_numpy().astype(np.int64)


def label_frame(
    data: "pd.DataFrame",
    lfs: Sequence,
    gold: "pd.DataFrame | None" = None,
    *,
    id_column: str = "id",
    text_column: str = "text",
    label_column: str = "label",
    cardinality: int = 2,
    epochs: int = 500,
    seed: int = 0,
    fault_tolerant: bool = False,
    n_jobs: int | None = None,
    test: "pd.DataFrame | None" = None,
    applier: str = "fast",
) -> "tuple[pd.DataFrame, LabelReport]":
    """Label ``data`` (see the module doc). ``gold``: rows of ``data`` by id with a ``label_column``.

    ``test`` (optional; text plus ``label_column``) is only scored, never fitted on.
    """
    import numpy as np

    from mlsys.labeling.analysis import lf_table

    if len(lfs) < 3:
        raise DataError(f"{len(lfs)} LFs given; the LabelModel needs at least 3")
    data = check_frame(data.reset_index(drop=True), "data", id_column, text_column)
    kind, applier = applier, make_applier(applier, lfs, cardinality=cardinality, n_jobs=n_jobs,
                                          fault_tolerant=fault_tolerant, id_column=id_column)
    L = applier.apply(data)
    errors, first_errors = dict(applier.errors), dict(applier.first_errors)

    is_gold = np.zeros(len(data), dtype=bool)
    y_gold = None
    if gold is not None and len(gold):
        labels = check_gold(gold, data[id_column], id_column, label_column, cardinality)
        pos = {ident: i for i, ident in enumerate(data[id_column])}
        gold_pos = np.array([pos[i] for i in gold[id_column]], dtype=int)
        is_gold[gold_pos] = True
        y_gold = np.full(len(data), -1, dtype=np.int64)
        y_gold[gold_pos] = labels

    weak = ~is_gold
    if not weak.any():
        raise DataError("every row is a gold row; nothing is left to label weakly")
    model = GoldAwareLabelModel(cardinality=cardinality, epochs=epochs, seed=seed)
    model.fit(L[weak], L[is_gold] if y_gold is not None else None,
              y_gold[is_gold] if y_gold is not None else None)

    proba = model.predict_proba(L)
    covered = (L != -1).any(axis=1)
    proba[~covered] = model.uncovered_proba  # what the gold says of the rows no LF labels (label -1, weight 0)
    label = np.where(covered, proba.argmax(axis=1), -1).astype(np.int64)
    weight = np.where(covered, proba.max(axis=1) * model.quality, 0.0)
    source = np.where(covered, "weak", "unlabeled").astype(object)
    if y_gold is not None:
        label[is_gold] = y_gold[is_gold]
        proba[is_gold] = np.eye(cardinality)[y_gold[is_gold]]
        weight[is_gold] = 1.0
        source[is_gold] = "gold"
    out = data.copy()
    out["label"] = label
    out["label_proba"] = [list(map(float, p)) for p in proba]
    out["label_source"] = source.astype(str)
    out["weight"] = weight.astype(float)

    metrics = {
        "rows": float(len(out)),
        "gold_rows": float(is_gold.sum()),
        "weak_rows": float((weak & covered).sum()),
        "unlabeled_rows": float((weak & ~covered).sum()),
        "coverage": float(covered[weak].mean()),
        "label_matrix_density": float((L[weak] != -1).mean()),
        "weak_quality": float(model.quality),
        "lf_errors": float(sum(errors.values())),
        **{f"class_balance_{c}": float(p) for c, p in enumerate(model.class_balance)},
        **{f"uncovered_proba_{c}": float(p) for c, p in enumerate(model.uncovered_proba)},
        # the share of each class among the rows a model would train on (weak and gold): far from the
        # class balance when the LFs fire mostly on one class
        **{f"trainable_share_{c}": float(((label == c) & (source != "unlabeled")).sum() / max((source != "unlabeled").sum(), 1))
           for c in range(cardinality)},
    }
    metrics |= {f"dev_accuracy_{k}": v for k, v in model.dev_accuracy.items()}
    test_acc = {}
    if test is not None and len(test):
        test = check_frame(test.reset_index(drop=True), "test", id_column, text_column)
        y_test = check_gold(test, None, id_column, label_column, cardinality, what="test")
        L_test = make_applier(kind, lfs, cardinality=cardinality, n_jobs=n_jobs, fault_tolerant=fault_tolerant,
                              id_column=id_column).apply(test)
        for name in model.models:
            test_acc[name] = float((model.raw_proba(name, L_test).argmax(axis=1) == y_test).mean())
        test_acc["chosen"] = float((model.predict_proba(L_test).argmax(axis=1) == y_test).mean())
        metrics["test_coverage"] = float((L_test != -1).any(axis=1).mean())
        metrics |= {f"test_accuracy_{k}": v for k, v in test_acc.items()}

    table = lf_table(lfs, L[weak], L[is_gold] if y_gold is not None else None,
                     y_gold[is_gold] if y_gold is not None else None,
                     model.learned_weights([lf.name for lf in lfs]), errors)
    report = LabelReport(chosen=model.chosen, metrics=metrics, lf_table=table, dev_accuracy=dict(model.dev_accuracy),
                         test_accuracy=test_acc, lf_errors=errors, lf_first_errors=first_errors,
                         calibrated=model.calibrated, quality_source=model.quality_source,
                         class_balance=[float(p) for p in model.class_balance],
                         class_balance_source=model.class_balance_source,
                         uncovered_proba=[float(p) for p in model.uncovered_proba])
    return out, report


__all__ = ["CANDIDATES", "LabelReport", "OUTPUT_COLUMNS", "check_frame", "check_gold", "label_frame"]
