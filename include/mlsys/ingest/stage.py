"""The ingest stage: CSV files -> three immutable datasets.

    comments_test         every comment of the held-out group (one video): evaluation only
    comments_gold         a small sample of the rest, with labels: the "expert" gold set
    comments_unlabeled    everything else, labels removed: weak supervision labels these

Labels outside the gold and test sets never leave this stage: the pipeline
downstream sees them only as the experts (gold) or the evaluators (test) would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsys.datasets import GOLD, TEST, UNLABELED
from mlsys.errors import DataError
from mlsys.settings import settings
from mlsys.spec import check_knobs, knob, require
from mlsys.storage import DatasetRef, DatasetStore

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

    @property
    def source_path(self) -> Path:
        return Path(self.source) if self.source else settings().data_dir / "youtube-spam"


@dataclass(frozen=True)
class IngestResult:
    unlabeled: DatasetRef
    gold: DatasetRef
    test: DatasetRef
    duplicates_dropped: int = 0
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "unlabeled": self.unlabeled.to_json(),
            "gold": self.gold.to_json(),
            "test": self.test.to_json(),
            "duplicates_dropped": self.duplicates_dropped,
            "files": self.files,
        }


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
            raise DataError(
                f"{path}: missing column(s) {missing}; found {list(df.columns)}. "
                f"Rename them or set IngestSpec.id_column/text_column/label_column"
            )
        if df.empty:
            raise DataError(f"{path}: the file has a header but no rows")
        bad = df[spec.label_column].isna() | ~df[spec.label_column].isin([0, 1])
        if bad.any():
            raise DataError(
                f"{path}: column {spec.label_column!r} must be 0 or 1; bad values "
                f"{df.loc[bad, spec.label_column].head(5).tolist()} in rows {df.index[bad][:5].tolist()}"
            )
        df[spec.group_column] = path.stem
        frames.append(df)
    return pd.concat(frames, ignore_index=True), files


def run(spec: IngestSpec) -> IngestResult:
    df, files = read_csvs(spec)
    df = df.rename(columns={spec.id_column: "id", spec.text_column: "text", spec.label_column: "label_true"})
    df = df.rename(columns={spec.group_column: "group"})
    df["text"] = df["text"].fillna("").astype(str)
    df["label_true"] = df["label_true"].astype("int64")
    before = len(df)
    df = df.drop_duplicates("id", keep="first").sort_values(["group", "id"]).reset_index(drop=True)
    keep = ["id", "group", "text", "label_true"] + [c for c in ("AUTHOR", "DATE") if c in df.columns]
    df = df[keep].rename(columns={"AUTHOR": "author", "DATE": "date"})

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
    refs = {
        name: store.write(name, part.reset_index(drop=True), sources=sources, created_by=created_by)
        for name, part in ((UNLABELED, unlabeled), (GOLD, gold), (TEST, test))
    }
    _log(spec, refs, before - len(df))
    return IngestResult(
        unlabeled=refs[UNLABELED],
        gold=refs[GOLD],
        test=refs[TEST],
        duplicates_dropped=before - len(df),
        files=[str(p) for p in files],
    )


def _log(spec: IngestSpec, refs: dict[str, DatasetRef], duplicates: int) -> None:
    import mlflow

    from mlsys.tracking import tracker

    if mlflow.active_run() is None:
        return
    mlflow.log_params({"source": str(spec.source_path), "test_group": spec.test_group,
                       "gold_size": spec.gold_size, "seed": spec.seed})
    mlflow.log_metrics({f"rows_{name}": ref.rows for name, ref in refs.items()} | {"duplicates_dropped": duplicates})
    for ref in refs.values():
        tracker.log_output(ref)
