"""label_frame, the Python API: a DataFrame and LFs in, the labeled DataFrame and a report out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys.errors import DataError
from mlsys.labeling import label_frame, regex_lf

LFS = [
    regex_lf("link", r"http", 1),
    regex_lf("subscribe", r"subscribe", 1),
    regex_lf("song", r"\bsong\b", 0),
    regex_lf("love", r"\blove\b", 0),
]
SPAM = ["check http://x.co", "subscribe please", "subscribe http://y.co", "free http://z.co"]
HAM = ["love this song", "great song", "i love it", "song of the year"]


def _frame(n: int = 10) -> pd.DataFrame:
    texts = (SPAM + HAM) * n + ["nothing to see", "hmm"]
    return pd.DataFrame({"doc": [f"d{i}" for i in range(len(texts))], "body": texts})


def _gold(df: pd.DataFrame, rows=range(0, 40, 2)) -> pd.DataFrame:
    ids = df["doc"].iloc[list(rows)]
    truth = [1 if any(w in t for w in ("http", "subscribe")) else 0 for t in df["body"].iloc[list(rows)]]
    return pd.DataFrame({"doc": ids, "label": truth})


def test_label_frame_returns_the_input_plus_labels_and_a_report():
    df = _frame()
    out, report = label_frame(df, LFS, _gold(df), id_column="doc", text_column="body", epochs=50, n_jobs=1)
    assert list(out.columns[:2]) == ["doc", "body"] and {"label", "label_proba", "label_source", "weight"} <= set(out)
    assert len(out) == len(df)
    by_source = out.groupby("label_source").size().to_dict()
    assert by_source == {"gold": 20, "weak": len(df) - 22, "unlabeled": 2}
    unl = out[out["label_source"] == "unlabeled"]
    assert set(unl["body"]) == {"nothing to see", "hmm"} and (unl["weight"] == 0).all() and (unl["label"] == -1).all()
    weak = out[out["label_source"] == "weak"]
    expected = weak["body"].map(lambda t: 1 if ("http" in t or "subscribe" in t) else 0)
    assert (weak["label"] == expected).all()
    assert ((weak["weight"] > 0) & (weak["weight"] <= 1)).all()
    assert np.allclose(np.stack(out["label_proba"]).sum(axis=1), 1)
    assert report.chosen in report.dev_accuracy and report.metrics["unlabeled_rows"] == 2
    assert list(report.lf_table["lf"]) == ["link", "subscribe", "song", "love"]
    assert report.lf_table.loc[0, "gold_accuracy"] == 1.0 and report.lf_table.loc[0, "coverage"] > 0
    assert report.to_json()["lfs"][0]["lf"] == "link"


def test_without_gold_every_row_is_weak_or_unlabeled():
    out, report = label_frame(_frame(), LFS, id_column="doc", text_column="body", epochs=50, n_jobs=1)
    assert set(out["label_source"]) == {"weak", "unlabeled"}
    assert report.chosen == "label_model" and report.quality_source == "label_model_confidence"


def test_test_split_is_scored_beside_majority_vote():
    df = _frame()
    test = pd.DataFrame({"doc": ["t1", "t2"], "body": ["subscribe now", "nice song"], "label": [1, 0]})
    _, report = label_frame(df, LFS, _gold(df), id_column="doc", text_column="body", epochs=50, test=test, n_jobs=1)
    assert report.test_accuracy["chosen"] == 1.0 and report.test_accuracy["majority_vote"] == 1.0
    assert report.metrics["test_accuracy_chosen"] == 1.0


@pytest.mark.parametrize("gold, message", [
    (pd.DataFrame({"doc": ["nope"], "label": [1]}), r"gold: 1 id\(s\) are not in the data, e\.g\. \['nope'\]"),
    (pd.DataFrame({"doc": ["d0"], "label": [2]}), r"outside the classes 0\.\.1: \[2\] \(ids \['d0'\]\)"),
    (pd.DataFrame({"doc": ["d0"], "label": ["spam"]}), r"outside the classes 0\.\.1: \['spam'\]"),
    (pd.DataFrame({"doc": ["d0"], "y": [1]}), r"gold: no column 'label'"),
    (pd.DataFrame({"doc": ["d0", "d0"], "label": [1, 1]}), r"ids \['d0'\] appear more than once"),
])
def test_bad_gold_is_a_clear_error(gold, message):
    with pytest.raises(DataError, match=message):
        label_frame(_frame(), LFS, gold, id_column="doc", text_column="body", epochs=10, n_jobs=1)


def test_bad_data_is_a_clear_error():
    df = _frame()
    with pytest.raises(DataError, match=r"data: no column 'text'; found \['doc', 'body'\]\. Pass the right text_column"):
        label_frame(df, LFS, id_column="doc", epochs=10)
    with pytest.raises(DataError, match=r"data: no column 'id'"):
        label_frame(df, LFS, text_column="body", epochs=10)
    latin1 = df.assign(body=df["body"].map(lambda t: t.encode("utf-8")))
    latin1.loc[3, "body"] = "café".encode("latin-1")
    with pytest.raises(DataError, match=r"column 'body' of row id 'd3' is not UTF-8 \(unexpected end of data at byte 3\)"):
        label_frame(latin1, LFS, id_column="doc", text_column="body", epochs=10)
    utf8, _ = label_frame(latin1.drop(index=3), LFS, id_column="doc", text_column="body", epochs=10, n_jobs=1)
    assert utf8["body"].map(type).eq(str).all()
    with pytest.raises(DataError, match=r"column 'body' is empty in rows with id \['d1'\]"):
        label_frame(df.assign(body=df["body"].where(df.index != 1)), LFS, id_column="doc", text_column="body")
    with pytest.raises(DataError, match=r"ids must be unique; \['d0'\]"):
        label_frame(df.assign(doc=["d0"] + df["doc"].tolist()[1:-1] + ["d0"]), LFS, id_column="doc", text_column="body")
    with pytest.raises(DataError, match="at least 3"):
        label_frame(df, LFS[:2], id_column="doc", text_column="body")
