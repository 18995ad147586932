"""``mlsys bench label_quality``: weak-label and end-model accuracy on the held-out video.

    mlsys bench label_quality [--gold-size 200] [--seed 0] [--epochs 500] [--home DIR]

Runs the pipeline's stages as the nightly DAG does, each in a tracked MLflow run
(experiment ``mlsys-cli``): ingest (test split = the Youtube05-Shakira comments,
never fitted on) -> label (default LF set and label model) -> train (default
``TrainSpec``) -> score the trained classifier on the test split. The last line is
JSON: the weak-label accuracy of every combiner on the test split (majority vote
included), the chosen one's, and the classifier's accuracy and F1. ``--home``
(default: a fresh temporary folder) is the ``MLSYS_HOME`` it runs in.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys bench label_quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gold-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="seed of the gold sample and the label model")
    parser.add_argument("--epochs", type=int, default=500, help="LabelModel epochs")
    parser.add_argument("--lfs", default="mlsys.labeling.youtube_lfs")
    parser.add_argument("--home", default="", help="MLSYS_HOME to run in (default: a new temporary folder)")
    args = parser.parse_args(argv)

    home = args.home or tempfile.mkdtemp(prefix="mlsys-label-quality-")
    from mlsys.settings import use_embedded_home

    use_embedded_home(home)

    import mlflow

    from mlsys.ingest.stage import IngestSpec
    from mlsys.ingest.stage import run as ingest
    from mlsys.labeling.stage import LabelSpec
    from mlsys.labeling.stage import run as label
    from mlsys.registry.stage import classification_metrics
    from mlsys.storage import DatasetStore
    from mlsys.tracking import RunContext, stage_run
    from mlsys.training.stage import TrainSpec
    from mlsys.training.stage import run as train

    start = time.perf_counter()
    with stage_run(RunContext.cli("ingest")):
        ingested = ingest(IngestSpec(gold_size=args.gold_size, seed=args.seed))
    with stage_run(RunContext.cli("label")):
        labeled = label(LabelSpec(lfs=args.lfs, epochs=args.epochs, seed=args.seed))
    with stage_run(RunContext.cli("train")) as run:
        trained = train(TrainSpec(dataset_version=labeled.labeled.version))
        test = DatasetStore().read(ingested.test.name, ingested.test.version)
        pred = mlflow.pyfunc.load_model(trained.model_uri).predict(test[["text"]])["prediction"].to_numpy()
        classifier = classification_metrics(test["label_true"].to_numpy(), pred)
        mlflow.log_metrics({f"test_{k}": v for k, v in classifier.items()})
    m = labeled.metrics
    result = {
        "benchmark": "label_quality",
        "test_group": "Youtube05-Shakira",
        "test_rows": ingested.test.rows,
        "gold_rows": ingested.gold.rows,
        "seed": args.seed,
        "label_model_chosen": labeled.model,
        "weak_label_accuracy": m.get("test_accuracy_chosen"),
        "majority_vote_accuracy": m.get("test_accuracy_majority_vote"),
        "label_model_accuracy": m.get("test_accuracy_label_model"),
        "gold_weighted_vote_accuracy": m.get("test_accuracy_gold_weighted_vote"),
        "test_coverage": m.get("test_coverage"),
        "classifier_accuracy": classifier["accuracy"],
        "classifier_f1": classifier["f1"],
        "train_rows": trained.train_rows,
        "mlflow_train_run_id": run.info.run_id,
        "home": home,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result))
    return 0
