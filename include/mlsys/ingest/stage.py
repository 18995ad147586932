"""The ingest stage: CSV files -> one snapshot of three immutable datasets.

    comments_test         every comment of the held-out group (one video): evaluation only
    comments_gold         a small sample of the rest, with labels: the "expert" gold set
    comments_unlabeled    everything else, labels removed: weak supervision labels these

Labels outside the gold and test sets never leave this stage: the pipeline
downstream sees them only as the experts (gold) or the evaluators (test) would.

The splits are committed together as one snapshot of the series ``comments``
(``DatasetStore.write_snapshot``): ``comments@latest`` moves once, forward only,
and a downstream stage finds the splits of the data it descends from with
``store.snapshot_of(name, version)``. Ingest never rewrites data silently: rows
with a missing id or text, and every row of an id that appears with different
content (text, label, group, author or date), go to ``comments_ingest_quarantine``
with a ``reason`` each (part of the snapshot); only exact duplicate rows are
dropped (``duplicates_dropped``). ``IngestResult.quarantined`` counts the rows
set aside by kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsys.datasets import COMMENTS, GOLD, INGEST_QUARANTINE, TEST, UNLABELED, typed_ids
from mlsys.errors import DataError
from mlsys.faults import failpoint
from mlsys.settings import settings
from mlsys.spec import check_knobs, knob, require
from mlsys.storage import DatasetRef, DatasetStore, Snapshot

if TYPE_CHECKING:
    import pandas as pd



@dataclass(frozen=True)
class IngestSpec:
    source: str = knob("", 'Folder of CSVs (or one CSV). Empty: $MLSYS_DATA_DIR/youtube-spam.')
    id_column: str = knob("COMMENT_ID", "Column holding each row's id.")
    text_column: str = knob("CONTENT", 'Column holding the text to classify.')
    label_column: str = knob("label", 'Column holding the true label (read for the gold and test rows only).')
    group_column: str = "video"  # which file (video) a comment came from; added from the file name
    test_group: str = knob("Youtube05-Shakira", 'File (group) held out as the test split.')
    gold_size: int = knob(200, 'Rows drawn as the expert gold set.', minimum=10)
    seed: int = knob(0, 'Seed for sampling the gold set and the label model.')
    storage_uri: str = ""

    def __post_init__(self):
        check_knobs(self)
        require(bool(self.test_group), "IngestSpec", "test_group", self.test_group, "name the group held out for test")
        conf = settings()
        require(conf.in_data_roots(self.source_path), "IngestSpec", "source", self.source or str(self.source_path),
                f"give a path under the data roots {[str(r) for r in conf.data_roots]}, or add its folder to "
                f"MLSYS_DATA_ROOTS (':'-separated)")

    @property
    def source_path(self) -> Path:
        return Path(self.source) if self.source else settings().data_dir / "youtube-spam"


@dataclass(frozen=True)
class IngestResult:
    unlabeled: DatasetRef
    gold: DatasetRef
    test: DatasetRef
    duplicates_dropped: int = 0  # exact duplicate rows (same id, same content): one kept
    files: list[str] = field(default_factory=list)
    quarantined: dict[str, int] = field(default_factory=dict)  # rows set aside, by kind (QUARANTINE_KINDS)
    quarantine: DatasetRef | None = None  # the comments_ingest_quarantine version holding them (None: no rows)
    snapshot: Snapshot | None = None  # the snapshot committing the splits

    def to_json(self) -> dict[str, Any]:
        return {
            "unlabeled": self.unlabeled.to_json(),
            "gold": self.gold.to_json(),
            "test": self.test.to_json(),
            "duplicates_dropped": self.duplicates_dropped,
            "files": self.files,
            "quarantined": dict(self.quarantined),
            "quarantine": self.quarantine.to_json() if self.quarantine else None,
            "snapshot": ({**self.snapshot.to_json(), "moved": bool(self.snapshot.move and self.snapshot.move.moved)}
                         if self.snapshot else None),
        }


QUARANTINE_KINDS = {"missing_id": "missing id", "missing_text": "missing text",
                    "conflicting_id": "conflicting duplicate id"}


def read_csvs(spec: IngestSpec) -> "tuple[pd.DataFrame, list[Path]]":
    """Read every CSV under the source; errors name the file (and the column) at fault."""
    import pandas as pd

    src = spec.source_path
    if not src.exists():
        raise DataError(f"ingest source {src} does not exist; set IngestSpec.source or MLSYS_DATA_DIR")
    files = sorted(src.glob("*.csv")) if src.is_dir() else [src]
    if not files:
        raise DataError(f"ingest source {src} holds no *.csv files")
    frames = []
    required = [spec.id_column, spec.text_column, spec.label_column]
    for path in files:
        try:
            df = pd.read_csv(path, dtype={spec.id_column: str, spec.text_column: str})
        except pd.errors.EmptyDataError as exc:
            raise DataError(f"{path}: the file is empty; expected a header with columns {required}") from exc
        except pd.errors.ParserError as exc:
            raise DataError(f"{path}: malformed CSV: {exc}; fix or remove the row") from exc
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-encode the file as UTF-8") from exc
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise DataError(  # the header is the file's content: never echoed (docs/security.md)
                f"{path}: missing column(s) {missing} among its {len(df.columns)} columns. "
                f"Rename them or set IngestSpec.id_column/text_column/label_column"
            )
        if df.empty:
            raise DataError(f"{path}: the file has a header but no rows")
        bad = df[spec.label_column].isna() | ~df[spec.label_column].isin([0, 1])
        if bad.any():
            raise DataError(
                f"{path}: column {spec.label_column!r} must be 0 or 1; {int(bad.sum())} rows are not, e.g. data rows "
                f"{df.index[bad][:5].tolist()} (0 = the first after the header)"
            )
        df[spec.group_column] = path.stem
        df["_row"] = range(len(df))  # the row's place in its file (0 = the first data row), for the quarantine
        frames.append(df)
    return pd.concat(frames, ignore_index=True), files


def screen(df: "pd.DataFrame") -> "tuple[pd.DataFrame, pd.DataFrame, int]":
    """(kept rows, quarantined rows with a ``reason`` each, exact duplicates dropped).

    Missing id or text (empty or blank) -> quarantined. An id whose rows differ in any other column ->
    every row of it quarantined (which one is right is for a person to say). Rows equal in every column
    -> one kept, the others counted.
    """
    import pandas as pd

    id_missing = df["id"].isna() | (df["id"].fillna("").astype(str).str.strip() == "")
    text_missing = df["text"].isna() | (df["text"].fillna("").astype(str).str.strip() == "")
    reason = pd.Series("", index=df.index, dtype=object)
    reason[id_missing] = QUARANTINE_KINDS["missing_id"]
    reason[~id_missing & text_missing] = QUARANTINE_KINDS["missing_text"]
    content = [c for c in df.columns if c not in ("id", "_row")]
    ok = df[reason == ""]
    distinct = ok.drop_duplicates(subset=["id", *content])
    for _, rows in ok[ok["id"].isin(distinct.loc[distinct["id"].duplicated(), "id"])].groupby("id"):
        differ = [c for c in content if rows[c].nunique(dropna=False) > 1]
        reason[rows.index] = f"{QUARANTINE_KINDS['conflicting_id']}: {len(rows)} rows differ in {', '.join(differ)}"
    kept = df[reason == ""]
    exact = int(kept["id"].duplicated().sum())
    kept = kept.drop_duplicates("id", keep="first")
    bad = df[reason != ""].assign(reason=reason[reason != ""]).rename(columns={"_row": "row"})
    return kept.drop(columns=["_row"]), bad.sort_values(["group", "row"]).reset_index(drop=True), exact


def run(spec: IngestSpec) -> IngestResult:
    df, files = read_csvs(spec)
    df = df.rename(columns={spec.id_column: "id", spec.text_column: "text", spec.label_column: "label_true"})
    df = df.rename(columns={spec.group_column: "group"})
    df["label_true"] = df["label_true"].astype("int64")
    keep = ["id", "group", "text", "label_true"] + [c for c in ("AUTHOR", "DATE") if c in df.columns] + ["_row"]
    df = df[keep].rename(columns={"AUTHOR": "author", "DATE": "date"})
    df, quarantine, duplicates = screen(df)
    df["id"] = typed_ids(df["id"])  # an integer id column stays integer in every output
    df["text"] = df["text"].astype(str)
    df = df.sort_values(["group", "id"]).reset_index(drop=True)
    quarantined = {kind: int(quarantine["reason"].str.startswith(text).sum()) for kind, text in QUARANTINE_KINDS.items()}

    groups = sorted(df["group"].unique())
    if spec.test_group not in groups:
        raise DataError(f"test_group {spec.test_group!r} is not among the groups {groups}; pick one of them")
    test = df[df["group"] == spec.test_group]
    rest = df[df["group"] != spec.test_group]
    if len(rest) <= spec.gold_size:
        raise DataError(f"only {len(rest)} non-test rows for gold_size={spec.gold_size}; lower gold_size")
    gold = rest.sample(n=spec.gold_size, random_state=spec.seed).sort_values("id")
    unlabeled = rest.drop(index=gold.index).drop(columns=["label_true"])

    store = DatasetStore(spec.storage_uri or None)
    from mlsys.tracking import tracker

    sources = {"files": ",".join(p.name for p in files)}
    created_by = {"mlflow_run_id": tracker.active_run_id()}
    parts = {UNLABELED: unlabeled, GOLD: gold, TEST: test}
    if len(quarantine):
        parts[INGEST_QUARANTINE] = quarantine
    snapshot = store.write_snapshot(COMMENTS, {name: part.reset_index(drop=True) for name, part in parts.items()},
                                    sources=sources, created_by=created_by)
    failpoint("ingest.committed")  # the fault suite kills the task here: the retry must change nothing
    refs = snapshot.refs
    _log(spec, refs, duplicates, quarantined)
    return IngestResult(
        unlabeled=refs[UNLABELED],
        gold=refs[GOLD],
        test=refs[TEST],
        duplicates_dropped=duplicates,
        files=[str(p) for p in files],
        quarantined=quarantined,
        quarantine=refs.get(INGEST_QUARANTINE),
        snapshot=snapshot,
    )


def _log(spec: IngestSpec, refs: dict[str, DatasetRef], duplicates: int, quarantined: dict[str, int]) -> None:
    import mlflow

    from mlsys.tracking import tracker

    if mlflow.active_run() is None:
        return
    mlflow.log_params({"source": str(spec.source_path), "test_group": spec.test_group,
                       "gold_size": spec.gold_size, "seed": spec.seed})
    mlflow.log_metrics({f"rows_{name}": ref.rows for name, ref in refs.items()} | {"duplicates_dropped": duplicates}
                       | {f"quarantined_{kind}": n for kind, n in quarantined.items()})
    for ref in refs.values():
        tracker.log_output(ref)
