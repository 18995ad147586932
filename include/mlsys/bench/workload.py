"""Benchmark workloads: a registered text model and text rows shaped like real comments.

Rows are real YouTube comments (the shipped corpus) sampled with replacement,
each followed by a random number, so that texts and bigrams keep being new and
no featurisation shortcut (a cache of seen texts) can look faster than it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mlsys.settings import settings


def comments() -> list[str]:
    import pandas as pd

    files = sorted(Path(settings().data_dir, "youtube-spam").glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no YouTube comment CSVs under {settings().data_dir}/youtube-spam; set MLSYS_DATA_DIR")
    return pd.concat([pd.read_csv(f)["CONTENT"] for f in files]).astype(str).tolist()


def text_chunks(rows: int, chunk_rows: int = 1 << 20, seed: int = 0) -> Iterator["pa.RecordBatch"]:  # noqa: F821
    """Record batches (id, text) of ``rows`` synthetic rows in total."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    corpus = pa.array(comments(), pa.large_string())
    rng = np.random.default_rng(seed)
    for start in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - start)
        picked = corpus.take(pa.array(rng.integers(0, len(corpus), n)))
        number = pc.cast(pa.array(rng.integers(0, 10**9, n)), pa.large_string())
        text = pc.binary_join_element_wise(picked, number, pa.scalar(" ", pa.large_string()))
        ids = pc.binary_join_element_wise(pa.scalar("r", pa.large_string()), pc.cast(pa.array(np.arange(start, start + n)), pa.large_string()), pa.scalar("", pa.large_string()))
        yield pa.RecordBatch.from_arrays([ids, text], names=["id", "text"])


def register_model(name: str, num_buckets: int = 1 << 15, dim: int = 64, depth: int = 2, seed: int = 0) -> str:
    """Log an (untrained, seeded) TextClassifier as the project's pyfunc, register it, alias it champion."""
    import mlflow
    import torch

    from mlsys.datasets import CHAMPION
    from mlsys.model import HashingFeaturizer, TextClassifier, TextClassifierConfig
    from mlsys.model.featurizer import DEFAULT_CHAR_NGRAMS
    from mlsys.model.pyfunc import log_model
    from mlsys.tracking import tracker

    tracker.configure()
    torch.manual_seed(seed)
    mcfg = TextClassifierConfig(num_buckets=num_buckets, dim=dim, depth=depth)
    model = TextClassifier(mcfg).eval()
    mlflow.set_experiment(experiment_id=tracker.experiment_id("mlsys-bench"))
    with mlflow.start_run(run_name=f"bench-model-{name}"):
        uri = log_model(model, HashingFeaturizer(num_buckets=num_buckets, char_ngrams=DEFAULT_CHAR_NGRAMS), mcfg, comments()[:5])
    mv = mlflow.register_model(uri, name)
    mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, mv.version)
    return str(mv.version)
