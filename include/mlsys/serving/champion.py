"""Find and load a registered model: an alias (``champion``) or a version number -> a Scorer.

The weights and the featurizer config are the logged model's files (model/artifact.py:
JSON and safetensors), read after checking the pipeline's signature over them. Nothing
is unpickled and none of the artifact's code runs, so a model version registered by
anyone but the pipeline, or changed in the artifact store, is refused, not served.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlsys.serving.scorer import Scorer


@dataclass(frozen=True)
class ModelVersionRef:
    name: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve(name: str, version_or_alias: str) -> ModelVersionRef:
    """The concrete version an alias points at now (or the version number itself, checked to exist)."""
    import mlflow

    client = mlflow.MlflowClient()
    if version_or_alias.isdigit():
        mv = client.get_model_version(name, version_or_alias)
    else:
        mv = client.get_model_version_by_alias(name, version_or_alias)
    return ModelVersionRef(name=name, version=str(mv.version))


def load(ref: ModelVersionRef) -> Scorer:
    return load_uri(ref.uri, ref.label)


def load_uri(model_uri: str, label: str = "") -> Scorer:
    """A Scorer of the model at ``model_uri`` (models:/..., runs:/... or a storage URI), signature checked."""
    from mlsys.model import artifact

    with tempfile.TemporaryDirectory(prefix="mlsys-model-") as tmp:
        folder = artifact.download(model_uri, Path(tmp))
        model, featurizer = artifact.read(folder, f"model {label or model_uri}")
        cut = artifact.threshold(folder)
    return Scorer(model, featurizer, label=label or model_uri, threshold=cut)
