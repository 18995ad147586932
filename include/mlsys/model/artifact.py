"""The shipped model as files: ``config.json`` (featurizer and network), ``weights.safetensors`` and the
pipeline's ``signature.json`` over both.

Neither file can carry code: the config is JSON, the weights are tensors in
safetensors. ``read`` checks the signature first, so serving and batch scoring
load only models the pipeline logged (model/signature.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

CONFIG_FILE, WEIGHTS_FILE = "config.json", "weights.safetensors"
FILES = [CONFIG_FILE, WEIGHTS_FILE]


def write(folder: Path, model, featurizer, model_config, operating_point: dict | None = None) -> list[Path]:
    """Write the model's files (``model_config``: its TextClassifierConfig; ``operating_point``: the decision
    threshold chosen on dev gold, training/operating_point.py) and their signature into ``folder``; return the paths."""
    from safetensors.torch import save_file

    from mlsys.model import signature

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(
        {"featurizer": dataclasses.asdict(featurizer), "model": model_config.to_json(),
         **({"operating_point": operating_point} if operating_point else {})}, sort_keys=True))
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_FILE))
    return [folder / CONFIG_FILE, folder / WEIGHTS_FILE, signature.sign(folder, FILES)]


def read(folder: Path, what: str, verify: bool = True):
    """(TextClassifier in eval mode, HashingFeaturizer) from ``folder``; refuses unsigned or changed files."""
    from safetensors.torch import load_file

    from mlsys.model import signature
    from mlsys.model.featurizer import HashingFeaturizer
    from mlsys.model.text_classifier import TextClassifier, TextClassifierConfig

    if verify:
        signature.verify(folder, FILES, what)
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    model = TextClassifier(TextClassifierConfig(**cfg["model"]))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval(), HashingFeaturizer(**cfg["featurizer"])


def threshold(folder: Path) -> float | None:
    """The stored decision threshold on P(class 1) (None: argmax), read after ``read`` checked the signature."""
    point = json.loads((folder / CONFIG_FILE).read_text()).get("operating_point") or {}
    value = point.get("threshold")
    return float(value) if value is not None else None


def download(model_uri: str, dest: Path) -> Path:
    """The model's three files from the artifact store (nothing else of the logged model) into ``dest``."""
    import mlflow

    if model_uri.startswith("models:/"):  # a registered version or a logged model: where its files are
        location = _download_uri(model_uri)
    else:
        location = model_uri
    from mlsys.model.signature import SIGNATURE_FILE

    folder = f"{location.rstrip('/')}/artifacts"
    present = {Path(f.path).name for f in mlflow.artifacts.list_artifacts(artifact_uri=folder)}
    missing = [n for n in FILES if n not in present]
    if missing:
        raise FileNotFoundError(f"{model_uri} has no {missing} under {folder}: it is not a model mlsys logged "
                                f"(a model logged before models-from-code needs retraining)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in [*FILES, SIGNATURE_FILE]:
        if name in present:  # a missing signature is refused by read()
            mlflow.artifacts.download_artifacts(artifact_uri=f"{folder}/{name}", dst_path=str(dest))
    return dest


def _download_uri(model_uri: str) -> str:
    import mlflow

    client = mlflow.MlflowClient()
    parts = model_uri[len("models:/"):].split("/")
    if len(parts) == 2:  # models:/name/version or models:/name@alias
        name, version = parts
        return client.get_model_version_download_uri(name, version)
    if "@" in parts[0]:
        name, alias = parts[0].split("@", 1)
        return client.get_model_version_download_uri(name, client.get_model_version_by_alias(name, alias).version)
    return client.get_logged_model(parts[0]).artifact_location  # models:/m-<id>
