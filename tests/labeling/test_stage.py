"""The label stage on the real YouTube comments: LFs + LabelModel + gold -> weighted labels."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mlsys.errors import SpecError
from mlsys.ingest.stage import GOLD, UNLABELED, IngestSpec
from mlsys.ingest.stage import run as ingest
from mlsys.labeling import youtube_lfs
from mlsys.labeling.stage import LABELED, LabelSpec, load_lfs, run
from mlsys.storage import DatasetStore

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "youtube-spam"
EPOCHS = 50


def _env(mp: pytest.MonkeyPatch, home: Path) -> None:
    mp.setenv("MLSYS_HOME", str(home))
    for var in ("MLSYS_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLSYS_ARTIFACT_URI"):
        mp.delenv(var, raising=False)
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """Ingest, then label inside a CLI-style MLflow run: done once for the module."""
    import mlflow

    from mlsys.tracking import RunContext, stage_run

    home = tmp_path_factory.mktemp("label-home")
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, home)
        ingested = ingest(IngestSpec(source=str(DATA), gold_size=200))
        with stage_run(RunContext.cli("label")) as active:
            result = run(LabelSpec(epochs=EPOCHS))
        store = DatasetStore()
        tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
        run_data = mlflow.MlflowClient(tracking_uri).get_run(active.info.run_id)
        yield SimpleNamespace(
            home=home, tracking_uri=tracking_uri, ingested=ingested, result=result, store=store, run=run_data,
            df=store.read(LABELED, result.labeled.version),
            unlabeled=store.read(UNLABELED), gold=store.read(GOLD),
        )


@pytest.fixture
def module_env(labeled, monkeypatch):
    """Point this test's environment at the module's MLSYS_HOME."""
    _env(monkeypatch, labeled.home)
    return labeled


def test_every_input_row_is_labeled_once(labeled):
    df = labeled.df
    assert len(df) == len(labeled.unlabeled) + len(labeled.gold) == labeled.result.labeled.rows
    assert df["id"].is_unique
    assert set(df["id"]) == set(labeled.unlabeled["id"]) | set(labeled.gold["id"])
    assert list(df.columns) == ["id", "group", "text", "label", "label_proba", "label_source", "weight"]


def test_label_values_and_probabilities(labeled):
    df = labeled.df
    assert set(df["label"]) <= {-1, 0, 1}
    proba = np.stack(df["label_proba"].to_numpy())
    assert proba.shape == (len(df), 2)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert ((proba >= 0) & (proba <= 1)).all()
    assert set(df["label_source"]) == {"gold", "weak", "unlabeled"}


def test_gold_rows_keep_their_true_label_with_full_weight(labeled):
    df = labeled.df
    gold = df[df["label_source"] == "gold"].set_index("id")
    truth = labeled.gold.set_index("id")["label_true"]
    assert len(gold) == len(truth) == 200
    assert (gold["label"] == truth.loc[gold.index]).all()
    assert (gold["weight"] == 1.0).all()
    proba = np.stack(gold["label_proba"].to_numpy())
    assert np.array_equal(proba.argmax(axis=1), gold["label"].to_numpy()) and (proba.max(axis=1) == 1.0).all()


def test_rows_where_every_lf_abstains_are_kept_unlabeled(labeled):
    from snorkel.labeling import PandasLFApplier

    L = PandasLFApplier(youtube_lfs.LFS).apply(labeled.unlabeled, progress_bar=False)
    abstained = set(labeled.unlabeled["id"][(L == -1).all(axis=1)])
    assert abstained, "the real data has comments no LF votes on"

    df = labeled.df
    unl = df[df["label_source"] == "unlabeled"]
    assert set(unl["id"]) == abstained
    assert (unl["label"] == -1).all() and (unl["weight"] == 0.0).all()
    assert labeled.result.unlabeled_rows == len(abstained) == labeled.result.metrics["unlabeled_rows"]


def test_weak_rows_have_weights_in_zero_one(labeled):
    weak = labeled.df[labeled.df["label_source"] == "weak"]
    assert len(weak) > 0
    assert ((weak["weight"] > 0) & (weak["weight"] <= 1)).all()
    assert weak["label"].isin([0, 1]).all()
    proba = np.stack(weak["label_proba"].to_numpy())
    assert np.array_equal(proba.argmax(axis=1), weak["label"].to_numpy())
    # weight = confidence x the chosen combiner's accuracy on gold, so never above the confidence
    assert (weak["weight"].to_numpy() <= proba.max(axis=1) + 1e-9).all()
    assert np.allclose(weak["weight"] / proba.max(axis=1), labeled.result.metrics["weak_quality"])


def test_the_combiner_with_higher_gold_accuracy_is_chosen(labeled):
    from snorkel.labeling import PandasLFApplier
    from snorkel.labeling.model import MajorityLabelVoter

    result = labeled.result
    acc = result.gold_accuracy
    assert set(acc) == {"label_model", "majority_vote"}
    assert result.model == max(acc, key=acc.get)
    assert acc[result.model] >= max(acc.values())
    assert result.labeled.extra["model"] == result.model

    # The majority vote's gold accuracy, recomputed independently (abstains count as wrong)
    L_gold = PandasLFApplier(youtube_lfs.LFS).apply(labeled.gold, progress_bar=False)
    pred = MajorityLabelVoter(cardinality=2).predict(L_gold, tie_break_policy="abstain")
    assert acc["majority_vote"] == pytest.approx((pred == labeled.gold["label_true"].to_numpy()).mean())


def test_labeled_dataset_records_its_sources(labeled):
    ref = labeled.result.labeled
    assert ref.sources == {UNLABELED: labeled.ingested.unlabeled.version, GOLD: labeled.ingested.gold.version}
    assert ref.extra["lfs"] == "mlsys.labeling.youtube_lfs"
    assert ref.created_by["mlflow_run_id"] == labeled.run.info.run_id


def test_relabeling_gives_the_same_version(module_env):
    again = run(LabelSpec(epochs=EPOCHS))
    assert again.labeled.version == module_env.result.labeled.version
    assert again.model == module_env.result.model


def test_mlflow_run_has_lf_summary_coverage_plot_and_inputs(labeled):
    import mlflow

    run_data = labeled.run
    client = mlflow.MlflowClient(labeled.tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(run_data.info.run_id)}
    assert {"lf_summary.json", "lf_coverage.png"} <= artifacts

    local = client.download_artifacts(run_data.info.run_id, "lf_summary.json")
    import json

    table = json.loads(Path(local).read_text())
    assert "lf" in table["columns"] and "Coverage (unlabeled)" in table["columns"]
    lf_names = [row[table["columns"].index("lf")] for row in table["data"]]
    assert lf_names == [lf.name for lf in youtube_lfs.LFS]

    inputs = {d.dataset.name: d for d in run_data.inputs.dataset_inputs}
    assert set(inputs) == {UNLABELED, GOLD}
    assert inputs[UNLABELED].dataset.digest == labeled.ingested.unlabeled.version
    assert inputs[GOLD].dataset.digest == labeled.ingested.gold.version
    assert run_data.data.params["label_combiner"] == labeled.result.model
    assert run_data.data.params["n_lfs"] == str(len(youtube_lfs.LFS))
    assert run_data.data.metrics["gold_rows"] == 200
    assert run_data.data.tags[f"mlsys.output.{LABELED}"] == labeled.result.labeled.version


# -- LF sets -------------------------------------------------------------------------


def test_load_lfs_of_the_shipped_set():
    assert load_lfs("mlsys.labeling.youtube_lfs") == youtube_lfs.LFS


def test_load_lfs_of_a_missing_module_is_a_spec_error():
    with pytest.raises(SpecError, match=r"LabelSpec\.lfs='no_such_pkg\.lfs' cannot be imported.*importable module"):
        load_lfs("no_such_pkg.lfs")


@pytest.mark.parametrize("body", ["X = 1\n", "LFS = []\n"])
def test_load_lfs_of_a_module_without_lfs_is_a_spec_error(tmp_path, monkeypatch, body):
    name = f"lfs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecError, match=rf"{name}.*LFS = \[lf1, lf2, \.\.\.\]"):
        load_lfs(name)


def test_bad_spec_names_the_field():
    with pytest.raises(SpecError, match=r"LabelSpec\.epochs=0"):
        LabelSpec(epochs=0)
    with pytest.raises(SpecError, match=r"LabelSpec\.lfs=''"):
        LabelSpec(lfs="")


CUSTOM_LFS = '''
from snorkel.labeling import labeling_function

@labeling_function()
def has_link(x):
    return 1 if "http" in x.text.lower() or ".com" in x.text.lower() else -1

@labeling_function()
def says_subscribe(x):
    return 1 if "subscrib" in x.text.lower() else -1

@labeling_function()
def says_song(x):
    return 0 if "song" in x.text.lower() else -1

LFS = [has_link, says_subscribe, says_song]
'''


def test_a_custom_lf_module(module_env, tmp_path, monkeypatch):
    name = f"my_lfs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(CUSTOM_LFS)
    monkeypatch.syspath_prepend(str(tmp_path))

    result = run(LabelSpec(lfs=name, epochs=EPOCHS))
    assert result.labeled.extra["lfs"] == name
    assert result.labeled.version != module_env.result.labeled.version
    df = module_env.store.read(LABELED, result.labeled.version)
    assert len(df) == len(module_env.df)
    # three narrow LFs leave many more comments unlabeled than the shipped ten
    assert result.unlabeled_rows > module_env.result.unlabeled_rows
    unl = df[df["label_source"] == "unlabeled"]
    assert (unl["label"] == -1).all() and (unl["weight"] == 0).all()
    text = df["text"].str.lower()
    says_song = text.str.contains("song") & ~text.str.contains("http|\\.com|subscrib")
    weak_song = df[(df["label_source"] == "weak") & says_song]
    assert len(weak_song) > 0 and (weak_song["label"] == 0).all()


TWO_LFS = '''
from snorkel.labeling import labeling_function

@labeling_function()
def has_link(x):
    return 1 if "http" in x.text.lower() else -1

@labeling_function()
def says_song(x):
    return 0 if "song" in x.text.lower() else -1

LFS = [has_link, says_song]
'''

PLAIN_FUNCTIONS = '''
def has_link(x):
    return 1 if "http" in x.text.lower() else -1

def says_song(x):
    return 0 if "song" in x.text.lower() else -1

def says_subscribe(x):
    return 1 if "subscribe" in x.text.lower() else -1

LFS = [has_link, says_song, says_subscribe]
'''


def test_an_lf_set_with_too_few_lfs_is_a_spec_error(module_env, tmp_path, monkeypatch):
    name = f"two_lfs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(TWO_LFS)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecError, match=name):
        run(LabelSpec(lfs=name, epochs=EPOCHS))


def test_lfs_that_are_plain_functions_are_a_spec_error(module_env, tmp_path, monkeypatch):
    name = f"plain_lfs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PLAIN_FUNCTIONS)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecError, match="labeling_function"):
        run(LabelSpec(lfs=name, epochs=EPOCHS))
