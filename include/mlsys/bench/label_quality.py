"""``mlsys bench label_quality``: weak-label and end-model quality on the held-out video.

    mlsys bench label_quality [--gold-size 200] [--seeds 0] [--epochs 500] [--home DIR]
                              [--positive-share 0.13] [--lfs MODULE]

Runs the pipeline's stages as the nightly DAG does, each in a tracked MLflow run
(experiment ``mlsys-cli``): ingest (test split = the Youtube05-Shakira comments,
never fitted on) -> label (default LF set and label model) -> train (default
``TrainSpec``) -> score the trained classifier on the test split, at its stored
operating point, as evaluate and serving do.

``--positive-share S`` runs the imbalanced variant: every video's spam is
subsampled (seeded) so that spam is a share S of its comments, as in a corpus
where the LFs' target class is rare. Beside the weak-supervision model it then
trains the same classifier (same stage, same spec) on the true labels of the same
rows: the reference the weak labels are judged against.

The last line is JSON: per seed, the weak-label accuracy of every combiner on the
test split, the chosen one's, and the classifier's accuracy, precision, recall and
F1 (and the reference's); then their medians over the seeds. ``--home`` (default:
a fresh temporary folder) is the ``MLSYS_HOME`` it runs in.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

YOUTUBE = "youtube-spam"


def imbalanced_copy(src: Path, dest: Path, share: float, seed: int) -> Path:
    """Each CSV of ``src`` with its spam (label 1) subsampled to ``share`` of its rows, written to ``dest``."""
    import pandas as pd

    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.csv")):
        df = pd.read_csv(path, dtype=str)
        spam, ham = df[df["label"] == "1"], df[df["label"] != "1"]
        keep = min(len(spam), round(share * len(ham) / (1 - share)))
        df = pd.concat([ham, spam.sample(n=keep, random_state=seed)]).sort_index()
        df.to_csv(dest / path.name, index=False)
    return dest


def _true_label_version(store, labeled_version: str, truth: dict) -> str:
    """A comments_labeled version with the true label of every row of ``labeled_version``: the reference."""
    import numpy as np

    from mlsys.datasets import LABELED

    df = store.read(LABELED, labeled_version)
    y = df["id"].map(truth).astype("int64").to_numpy()
    df["label"] = y
    df["label_proba"] = list(np.eye(2)[y])
    df["label_source"] = df["label_source"].where(df["label_source"] == "gold", "weak")  # the same dev gold rows
    df["weight"] = 1.0
    extra = {k: v for k, v in store.ref(LABELED, labeled_version).extra.items() if k.startswith("class_balance")}
    return store.write(LABELED, df, extra={**extra, "reference": "true labels"}).version


def _one_seed(args, seed: int, source: Path | None) -> dict:
    import pandas as pd

    from mlsys.ingest.stage import IngestSpec
    from mlsys.ingest.stage import run as ingest
    from mlsys.labeling.stage import LabelSpec
    from mlsys.labeling.stage import run as label
    from mlsys.registry.stage import classification_metrics
    from mlsys.serving.champion import load_uri
    from mlsys.storage import DatasetStore
    from mlsys.tracking import RunContext, stage_run
    from mlsys.training.stage import TrainSpec
    from mlsys.training.stage import run as train

    store = DatasetStore()
    with stage_run(RunContext.cli("ingest")):
        ingested = ingest(IngestSpec(source=str(source or ""), gold_size=args.gold_size, seed=seed))
    with stage_run(RunContext.cli("label")):
        labeled = label(LabelSpec(lfs=args.lfs, epochs=args.epochs, seed=seed))
    test = store.read(ingested.test.name, ingested.test.version)
    texts, y_test = test["text"].astype(str).tolist(), test["label_true"].to_numpy()

    def fit_and_score(version: str) -> dict:
        with stage_run(RunContext.cli("train")):
            trained = train(TrainSpec(dataset_version=version, seed=seed))
        pred = load_uri(trained.model_uri).score_texts(texts).prediction
        return {**classification_metrics(y_test, pred), "train_rows": trained.train_rows}

    m = labeled.metrics
    out = {"seed": seed, "test_rows": ingested.test.rows, "test_positive_share": round(float(y_test.mean()), 3),
           "label_model_chosen": labeled.model, "weak_label_accuracy": m.get("test_accuracy_chosen"),
           "majority_vote_accuracy": m.get("test_accuracy_majority_vote"),
           "label_model_accuracy": m.get("test_accuracy_label_model"),
           "gold_weighted_vote_accuracy": m.get("test_accuracy_gold_weighted_vote"),
           "test_coverage": m.get("test_coverage"), "classifier": fit_and_score(labeled.labeled.version)}
    if source is not None:
        truth = pd.concat([pd.read_csv(p, dtype={"COMMENT_ID": str}) for p in source.glob("*.csv")])
        truth = dict(zip(truth["COMMENT_ID"], truth["label"].astype(int)))
        out["reference"] = fit_and_score(_true_label_version(store, labeled.labeled.version, truth))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys bench label_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gold-size", type=int, default=200)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (gold sample, label model, subsample)")
    parser.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    parser.add_argument("--epochs", type=int, default=500, help="LabelModel epochs")
    parser.add_argument("--lfs", default="mlsys.labeling.youtube_lfs")
    parser.add_argument("--positive-share", type=float, default=0.0,
                        help="the imbalanced variant: spam subsampled to this share of every video (e.g. 0.13)")
    parser.add_argument("--home", default="", help="MLSYS_HOME to run in (default: a new temporary folder)")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",") if s.strip()]
    if not 0.0 <= args.positive_share < 1.0:
        parser.error(f"--positive-share={args.positive_share}: give a share in (0, 1), e.g. 0.13, or 0 for none")

    from mlsys.settings import settings, use_embedded_home

    start = time.perf_counter()
    runs = []
    base = Path(args.home or tempfile.mkdtemp(prefix="mlsys-label-quality-"))
    for seed in seeds:
        home = base / f"seed-{seed}"
        use_embedded_home(home)
        source = None
        if args.positive_share:
            source = imbalanced_copy(settings().data_dir / YOUTUBE, home / "data" / YOUTUBE, args.positive_share, seed)
        runs.append(_one_seed(args, seed, source))

    def med(get) -> float | None:
        values = [v for v in (get(r) for r in runs) if v is not None]
        return round(statistics.median(values), 4) if values else None

    result = {"benchmark": "label_quality", "test_group": "Youtube05-Shakira", "positive_share": args.positive_share,
              "gold_rows": args.gold_size, "seeds": seeds, "runs": runs,
              "weak_label_accuracy": med(lambda r: r["weak_label_accuracy"]),
              **{f"classifier_{k}": med(lambda r, k=k: r["classifier"][k]) for k in ("accuracy", "precision", "recall", "f1")},
              "seconds": round(time.perf_counter() - start, 1)}
    if args.positive_share:
        result.update({f"reference_{k}": med(lambda r, k=k: r["reference"][k]) for k in ("accuracy", "precision", "recall", "f1")})
        result["f1_gap_to_reference"] = round(result["reference_f1"] - result["classifier_f1"], 4)
    print(json.dumps(result))
    return 0
