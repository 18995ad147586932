"""The shipped model's files: signed by the pipeline, read back without pickle, refused when not the pipeline's."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from mlsys.model import artifact, signature
from mlsys.model.featurizer import HashingFeaturizer
from mlsys.model.pyfunc import log_model
from mlsys.model.signature import UnsignedModelError
from mlsys.model.text_classifier import TextClassifier, TextClassifierConfig, predict_proba
from mlsys.serving import champion
from mlsys.serving.online.model_holder import ModelHolder

TEXTS = ["check out my channel http://x.y", "great song", "subscribe!!!", "love this"]


def _model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = TextClassifierConfig(num_buckets=256, dim=8, depth=1)
    return TextClassifier(cfg).eval(), HashingFeaturizer(num_buckets=256, char_ngrams=(2, 3)), cfg


def test_files_round_trip_and_are_signed(mlsys_home, tmp_path):
    model, feat, cfg = _model()
    artifact.write(tmp_path / "m", model, feat, cfg)
    back, feat_back = artifact.read(tmp_path / "m", "test model")
    assert feat_back == feat
    assert torch.equal(predict_proba(back, feat_back, TEXTS), predict_proba(model, feat, TEXTS))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "signature.json", "weights.safetensors"]


def test_changed_weights_are_refused(mlsys_home, tmp_path):
    model, feat, cfg = _model()
    artifact.write(tmp_path, model, feat, cfg)
    other, _, _ = _model(seed=1)
    artifact.write(tmp_path / "other", other, feat, cfg)
    (tmp_path / "weights.safetensors").write_bytes((tmp_path / "other" / "weights.safetensors").read_bytes())
    with pytest.raises(UnsignedModelError, match=r"\['weights.safetensors'\] changed"):
        artifact.read(tmp_path, "test model")


def test_a_signature_by_another_key_or_none_is_refused(mlsys_home, tmp_path, monkeypatch):
    model, feat, cfg = _model()
    artifact.write(tmp_path, model, feat, cfg)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    monkeypatch.setenv("MLSYS_MODEL_VERIFY_KEY", base64.b64encode(stranger).decode())
    with pytest.raises(UnsignedModelError, match="does not match the pipeline's key"):
        artifact.read(tmp_path, "test model")
    monkeypatch.delenv("MLSYS_MODEL_VERIFY_KEY")
    (tmp_path / "signature.json").unlink()
    with pytest.raises(UnsignedModelError, match="has no signature.json"):
        artifact.read(tmp_path, "test model")


def test_keys_from_the_environment(mlsys_home, tmp_path, monkeypatch, capsys):
    signature.main()
    pair = dict(line.split("=", 1) for line in capsys.readouterr().out.split())
    monkeypatch.setenv("MLSYS_MODEL_SIGNING_KEY", pair["MLSYS_MODEL_SIGNING_KEY"])
    model, feat, cfg = _model()
    artifact.write(tmp_path, model, feat, cfg)
    assert not (mlsys_home / "keys").exists(), "a configured key makes no local key pair"
    monkeypatch.delenv("MLSYS_MODEL_SIGNING_KEY")
    monkeypatch.setenv("MLSYS_MODEL_VERIFY_KEY_FILE", str(tmp_path / "verify.pub"))
    (tmp_path / "verify.pub").write_text(pair["MLSYS_MODEL_VERIFY_KEY"] + "\n")
    artifact.read(tmp_path, "test model")  # the public key alone verifies
    monkeypatch.setenv("MLSYS_MODEL_VERIFY_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="MLSYS_MODEL_VERIFY_KEY_FILE=.*cannot be read"):
        artifact.read(tmp_path, "test model")


class _Pickled(mlflow.pyfunc.PythonModel):
    """A model someone logs with MLflow's default (cloudpickle): unpickling it would run its __setstate__."""

    def __init__(self, marker: str):
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).write_text("code ran while loading")
        self.__dict__.update(state)

    def predict(self, context, model_input, params=None):
        return model_input


@pytest.fixture
def registry(mlsys_home):
    mlflow.set_tracking_uri(f"sqlite:///{mlsys_home / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{mlsys_home / 'mlflow.db'}")  # not one an earlier test in this process set
    mlflow.set_experiment("artifact-test")
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def _register(uri: str, alias: str | None = None) -> str:
    mv = mlflow.register_model(uri, "m")
    if alias:
        mlflow.MlflowClient().set_registered_model_alias("m", alias, mv.version)
    return mv.version


def test_serving_loads_the_pipelines_model_from_code_without_pickle(registry):
    model, feat, cfg = _model()
    with mlflow.start_run():
        uri = log_model(model, feat, cfg, TEXTS[:2])
    location = registry.get_model_version_download_uri("m", _register(uri, "champion"))
    assert not list(Path(location).rglob("*.pkl")), "models from code: no pickle in the artifact"
    scorer = champion.load(champion.resolve("m", "champion"))
    assert torch.allclose(torch.from_numpy(scorer.score_texts(TEXTS).proba), predict_proba(model, feat, TEXTS))
    pyfunc = mlflow.pyfunc.load_model("models:/m/1").predict(pd.DataFrame({"text": TEXTS}))  # still a pyfunc for MLflow
    assert pyfunc["prediction"].tolist() == scorer.score_texts(TEXTS).prediction.tolist()


def test_a_version_registered_outside_the_pipeline_is_refused(registry, tmp_path):
    model, feat, cfg = _model()
    with mlflow.start_run():
        good = log_model(model, feat, cfg, TEXTS[:2])
    _register(good, "champion")
    holder = ModelHolder("m", "champion", poll_s=3600)
    assert holder.refresh().changed and holder.label == "m/1"

    marker = tmp_path / "pwned"
    with mlflow.start_run():  # the stranger's model: a pickle, with files that look like ours beside it
        art = tmp_path / "art"
        art.mkdir()
        for name in ("config.json", "weights.safetensors"):
            (art / name).write_bytes((Path(registry.get_model_version_download_uri("m", "1")) / "artifacts" / name)
                                     .read_bytes())
        (art / "signature.json").write_text(json.dumps({"files": {}, "signature": ""}))
        bad = mlflow.pyfunc.log_model(name="model", python_model=_Pickled(str(marker)),
                                      artifacts={p.name: str(p) for p in art.iterdir()}).model_uri
    marker.unlink(missing_ok=True)  # MLflow itself loads the pickle while logging it
    registry.set_registered_model_alias("m", "champion", _register(bad))
    result = holder.refresh()
    assert not result.changed and holder.label == "m/1", "the old model keeps serving"
    assert "UnsignedModelError" in result.error
    assert not marker.exists(), "nothing was unpickled"
