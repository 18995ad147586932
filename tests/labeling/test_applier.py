"""FastLFApplier: Snorkel's label matrix, vectorised and in parallel; LF errors name the LF and the row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from snorkel.labeling import PandasLFApplier, labeling_function

from mlsys.labeling import applier as applier_module
from mlsys.labeling import youtube_lfs
from mlsys.labeling.applier import FastLFApplier, LFError, Row
from mlsys.labeling.lf import regex_lf

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "youtube-spam"


@pytest.fixture(scope="module")
def comments() -> pd.DataFrame:
    frames = [pd.read_csv(f, dtype=str).assign(group=f.stem) for f in sorted(DATA.glob("*.csv"))]
    return pd.concat(frames, ignore_index=True).rename(columns={"COMMENT_ID": "id", "CONTENT": "text"})


@labeling_function()
def row_exclaims(x):
    """A plain Snorkel LF (row-wise only), reading two fields."""
    return 1 if x.text.count("!") >= 3 and x["group"] else -1


@labeling_function()
def row_author_has_digits(x):
    return 1 if any(c.isdigit() for c in x.AUTHOR) else -1


MIXED = list(youtube_lfs.lfs) + [row_exclaims, row_author_has_digits]


@pytest.mark.parametrize("parallel", [False, True], ids=["in-process", "two-workers"])
def test_label_matrix_is_identical_to_pandas_lf_applier(comments, monkeypatch, parallel):
    if parallel:  # force partitions on the small corpus
        monkeypatch.setattr(applier_module, "MIN_ROWS_PER_WORKER", 100)
    expected = PandasLFApplier(MIXED).apply(comments, progress_bar=False)
    got = FastLFApplier(MIXED, n_jobs=2 if parallel else 1).apply(comments)
    assert got.dtype == expected.dtype and got.shape == expected.shape == (len(comments), len(MIXED))
    assert np.array_equal(got, expected)
    assert (got != -1).any(axis=0).all(), "every LF votes somewhere on the real corpus"


def test_empty_frame_gives_an_empty_matrix():
    assert FastLFApplier(youtube_lfs.lfs).apply(pd.DataFrame({"id": [], "text": []})).shape == (0, len(youtube_lfs.lfs))


def test_row_reads_fields_by_attribute_and_key():
    x = Row(text="hi", id="7")
    assert x.text == x["text"] == "hi"
    x.extra = 1
    assert x["extra"] == 1
    with pytest.raises(AttributeError):
        _ = x.missing


@labeling_function()
def crashes_on_sevens(x):
    if "7" in x.id:
        raise KeyError("boom")
    return -1


FRAME = pd.DataFrame({"id": ["a1", "b7", "c2", "d77"], "text": ["free", "song", "x", "y"]})


@pytest.mark.parametrize("parallel", [False, True], ids=["in-process", "two-workers"])
def test_an_lf_that_raises_fails_naming_the_lf_and_the_row_id(monkeypatch, parallel):
    if parallel:
        monkeypatch.setattr(applier_module, "MIN_ROWS_PER_WORKER", 1)
    with pytest.raises(LFError, match=r"'crashes_on_sevens' raised on row 'b7' \(position 1\): KeyError: 'boom'.*"
                                      r"fault_tolerant=True"):
        FastLFApplier([crashes_on_sevens], n_jobs=2 if parallel else 1).apply(FRAME)


def test_fault_tolerant_mode_abstains_and_counts_errors_per_lf():
    lfs = [crashes_on_sevens, regex_lf("free", "free", 1)]
    applier = FastLFApplier(lfs, fault_tolerant=True)
    L = applier.apply(FRAME)
    assert L.tolist() == [[-1, 1], [-1, -1], [-1, -1], [-1, -1]]
    assert applier.errors == {"crashes_on_sevens": 2}
    assert applier.first_errors["crashes_on_sevens"].startswith("row 'b7': KeyError")
    # the same counts as Snorkel's own fault-tolerant mode
    _, meta = PandasLFApplier(lfs).apply(FRAME, progress_bar=False, fault_tolerant=True, return_meta=True)
    assert dict(meta.faults) == applier.errors


def test_a_column_lf_on_missing_text_fails_like_its_row_form():
    frame = pd.DataFrame({"id": ["a", "b"], "text": ["free", None]})
    with pytest.raises(LFError, match=r"'free' raised on row 'b'.*TypeError"):
        FastLFApplier([regex_lf("free", "free", 1)]).apply(frame)
    applier = FastLFApplier([regex_lf("free", "free", 1)], fault_tolerant=True)
    assert applier.apply(frame).tolist() == [[1], [-1]] and applier.errors == {"free": 1}


@labeling_function()
def says_seven(x):
    return 7 if "song" in x.text else -1


@labeling_function()
def says_text(x):
    return "spam"


def test_an_lf_output_outside_the_classes_is_an_error():
    with pytest.raises(LFError, match=r"'says_seven' returned 7 on row 'b7'; an LF returns -1 \(abstain\) or a class in 0\.\.1"):
        FastLFApplier([says_seven]).apply(FRAME)
    with pytest.raises(LFError, match=r"'says_text' returned a non-integer value on row 'a1'"):
        FastLFApplier([says_text]).apply(FRAME)
    # with three classes, 2 is fine
    assert FastLFApplier([regex_lf("two", "free", 2)], cardinality=3).apply(FRAME)[:, 0].tolist() == [2, -1, -1, -1]


def test_duplicate_lf_names_are_an_error():
    with pytest.raises(LFError, match=r"unique; \['free'\]"):
        FastLFApplier([regex_lf("free", "a", 1), regex_lf("free", "b", 1)])


# -- scale-out: Snorkel's Dask and Spark appliers on a real local cluster -------------------------------------


@pytest.fixture(scope="module")
def clusters():
    """A dask.distributed LocalCluster (2 worker processes) and a local Spark session (2 cores), for the module.

    The LFs defined in this file travel to the workers by value (cloudpickle), as a user's LF module would be
    importable there by name."""
    import sys

    import cloudpickle
    from dask.distributed import LocalCluster
    from pyspark import cloudpickle as spark_cloudpickle

    from mlsys.labeling.applier import SparkApplier

    module = sys.modules[__name__]
    for pickler in (cloudpickle, spark_cloudpickle):
        pickler.register_pickle_by_value(module)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        session = SparkApplier(MIXED, master="local[2]").session()
        yield {"dask": {"address": cluster.scheduler_address}, "spark": {"master": "local[2]"}}
        session.stop()
    for pickler in (cloudpickle, spark_cloudpickle):
        pickler.unregister_pickle_by_value(module)


@pytest.mark.parametrize("kind", ["dask", "spark"])
def test_cluster_appliers_give_pandas_and_our_matrix(comments, clusters, kind):
    from mlsys.labeling.applier import make_applier

    expected = PandasLFApplier(MIXED).apply(comments, progress_bar=False)
    ours = FastLFApplier(MIXED, n_jobs=2).apply(comments)
    got = make_applier(kind, MIXED, n_jobs=2, **clusters[kind]).apply(comments)
    assert got.dtype == expected.dtype and got.shape == expected.shape == (len(comments), len(MIXED))
    assert np.array_equal(got, expected) and np.array_equal(got, ours)


@pytest.mark.parametrize("kind", ["dask", "spark"])
def test_cluster_appliers_raise_an_lfs_error_or_abstain(clusters, kind):
    from mlsys.labeling.applier import make_applier

    with pytest.raises(LFError, match=rf"the {kind} applier failed: .*boom.*fault_tolerant=True"):
        make_applier(kind, [crashes_on_sevens], n_jobs=2, **clusters[kind]).apply(FRAME)
    tolerant = make_applier(kind, [crashes_on_sevens, regex_lf("free", "free", 1)], n_jobs=2, fault_tolerant=True,
                            **clusters[kind])
    assert tolerant.apply(FRAME).tolist() == [[-1, 1], [-1, -1], [-1, -1], [-1, -1]]
    with pytest.raises(LFError, match=r"'says_seven' returned 7 on row 'b7'"):
        make_applier(kind, [says_seven], n_jobs=2, **clusters[kind]).apply(FRAME)


def test_the_label_stage_offers_every_applier_and_refuses_others():
    from mlsys.errors import SpecError
    from mlsys.labeling.applier import APPLIERS, make_applier
    from mlsys.labeling.stage import LabelSpec
    from mlsys.spec import knobs

    assert tuple(knobs(LabelSpec)["applier"].metadata["schema"]["enum"]) == APPLIERS
    assert LabelSpec(applier="spark").applier == "spark"
    with pytest.raises(SpecError, match=r"LabelSpec\.applier='hadoop' is invalid: use one of \['fast', 'dask'"):
        LabelSpec(applier="hadoop")
    with pytest.raises(LFError, match=r"applier='hadoop' is invalid"):
        make_applier("hadoop", youtube_lfs.lfs)


def test_label_frame_runs_on_a_cluster_applier(comments, clusters, monkeypatch):
    """The label stage's path: label_frame(applier="dask") with the scheduler from MLSYS_DASK_SCHEDULER."""
    from mlsys.labeling.labeler import label_frame

    monkeypatch.setenv("MLSYS_DASK_SCHEDULER", clusters["dask"]["address"])
    data = comments[["id", "text"]].head(400)
    gold = comments[["id"]].head(60).assign(label=comments["label"].head(60).astype(int))
    fast, _ = label_frame(data, youtube_lfs.lfs, gold, epochs=20, n_jobs=1)
    dask, _ = label_frame(data, youtube_lfs.lfs, gold, epochs=20, n_jobs=1, applier="dask")
    assert dask["label"].tolist() == fast["label"].tolist()
