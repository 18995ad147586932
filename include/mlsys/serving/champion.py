"""Find and load a registered model: an alias (``champion``) or a version number -> a Scorer.

The weights and the featurizer config come from the registered pyfunc's
artifacts (``weights``, ``config``; see pyfunc_model.py), so batch scoring and
the online server run exactly the model that ``mlflow.pyfunc.load_model`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    import mlflow

    wrapper = mlflow.pyfunc.load_model(ref.uri).unwrap_python_model()
    return Scorer(wrapper.model, wrapper.featurizer, label=ref.label)
