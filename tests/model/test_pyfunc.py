"""The logged pyfunc: the vectorised featurizer's fast path, with the reference path's outputs bit for bit."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from mlsys.model.featurizer import HashingFeaturizer
from mlsys.model.pyfunc import BATCH_ROWS, TextClassifierPyfunc, log_model
from mlsys.model.text_classifier import TextClassifier, TextClassifierConfig, predict_proba
from mlsys.model.vector_featurizer import VectorFeaturizer

EDGES = ["", "   ", "!!!", "Kelvin \u212a and \u0130stanbul", "a" * 300, "💥 ünïcode çà", "it's O'Neil's", "new\nline\ttab"]


def _pyfunc(char_ngrams=(2, 3), num_buckets: int = 1 << 12):
    torch.manual_seed(0)
    cfg = TextClassifierConfig(num_buckets=num_buckets, dim=16, depth=1)
    model, feat = TextClassifier(cfg).eval(), HashingFeaturizer(num_buckets=num_buckets, char_ngrams=char_ngrams)
    pyfunc = TextClassifierPyfunc()
    pyfunc.model, pyfunc.featurizer, pyfunc.vector = model, feat, VectorFeaturizer.like(feat)
    return pyfunc, model, feat, cfg


@pytest.mark.parametrize("char_ngrams", [(2, 3), ()])
def test_predict_equals_the_python_featurizer_path_bit_for_bit(youtube_texts, char_ngrams):
    """More rows than one batch, real comments and the featurizers' edge cases: the same ids, the same floats."""
    pyfunc, model, feat, _ = _pyfunc(char_ngrams)
    texts = (youtube_texts * 3)[: 2 * BATCH_ROWS + 77] + EDGES
    got = pyfunc.predict(None, pd.DataFrame({"text": texts}))
    want = predict_proba(model, feat, texts).numpy()  # HashingFeaturizer, one text at a time in Python
    assert list(got.columns) == ["prediction", "proba_0", "proba_1"] and len(got) == len(texts)
    assert np.array_equal(got[["proba_0", "proba_1"]].to_numpy(), want.astype("float64"))
    assert np.array_equal(got["prediction"].to_numpy(), want.argmax(axis=1))


def test_a_column_in_arrow_chunks_as_read_from_parquet(youtube_texts):
    import pyarrow as pa

    pyfunc, model, feat, _ = _pyfunc()
    texts = youtube_texts[:BATCH_ROWS + 10]
    pieces = pa.chunked_array([pa.array(texts[:1000], pa.large_string()), pa.array(texts[1000:], pa.large_string())])
    df = pa.table({"text": pieces}).to_pandas()
    assert isinstance(pa.array(df["text"]), pa.ChunkedArray)  # what predict is handed after a Parquet read
    got = pyfunc.predict(None, df)
    assert np.array_equal(got["proba_1"].to_numpy(), predict_proba(model, feat, texts).numpy()[:, 1].astype("float64"))


def test_non_text_values_are_read_as_their_text_and_missing_ones_are_refused():
    pyfunc, model, feat, _ = _pyfunc()
    mixed = pd.DataFrame({"text": pd.Series([12, "ok", 3.5], dtype=object)})
    want = predict_proba(model, feat, ["12", "ok", "3.5"]).numpy()
    assert np.array_equal(pyfunc.predict(None, mixed)[["proba_0", "proba_1"]].to_numpy(), want.astype("float64"))
    with pytest.raises(ValueError, match="column 'text' has 1 missing values"):
        pyfunc.predict(None, pd.DataFrame({"text": ["a", None]}))
    assert len(pyfunc.predict(None, pd.DataFrame({"text": pd.Series([], dtype=str)}))) == 0


def test_the_logged_model_predicts_through_mlflow_with_the_fast_path(mlsys_home, youtube_texts):
    _, model, feat, cfg = _pyfunc()
    mlflow.set_tracking_uri(f"sqlite:///{mlsys_home / 'mlflow.db'}")
    try:
        mlflow.set_experiment("pyfunc-test")
        with mlflow.start_run():
            uri = log_model(model, feat, cfg, youtube_texts[:3])
        loaded = mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(None)
    assert isinstance(loaded.unwrap_python_model().vector, VectorFeaturizer)
    texts = youtube_texts[:500]
    got = loaded.predict(pd.DataFrame({"text": texts}))
    assert np.array_equal(got["proba_1"].to_numpy(), predict_proba(model, feat, texts).numpy()[:, 1].astype("float64"))


def test_a_logged_operating_point_decides_as_the_scorer_does(mlsys_home, youtube_texts):
    """The train stage may log a threshold on P(class 1): the pyfunc and mlsys's Scorer must agree on it."""
    from mlsys.serving import champion

    _, model, feat, cfg = _pyfunc()
    texts = youtube_texts[:400]
    cut = float(np.median(predict_proba(model, feat, texts).numpy()[:, 1]))  # half the rows flip away from argmax
    mlflow.set_tracking_uri(f"sqlite:///{mlsys_home / 'mlflow.db'}")
    try:
        mlflow.set_experiment("pyfunc-threshold-test")
        with mlflow.start_run():
            uri = log_model(model, feat, cfg, texts[:3], operating_point={"threshold": cut})
        got = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": texts}))
        scorer = champion.load_uri(uri)
    finally:
        mlflow.set_tracking_uri(None)
    assert np.array_equal(got["prediction"].to_numpy(), (got["proba_1"].to_numpy() >= cut).astype("int64"))
    assert np.array_equal(got["prediction"].to_numpy(), scorer.score_texts(texts).prediction)


@pytest.fixture(scope="module")
def youtube_texts(youtube_dir) -> list[str]:
    """The shipped comments, as the pyfunc gets them from a DataFrame."""
    return pd.concat([pd.read_csv(f)["CONTENT"] for f in sorted(youtube_dir.glob("*.csv"))]).astype(str).tolist()
