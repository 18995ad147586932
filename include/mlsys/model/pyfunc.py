"""The MLflow pyfunc wrapper: text in, class and probabilities out.

It carries the featurizer config and the weights, so any MLflow consumer
(``mlflow.pyfunc.load_model``, ``mlflow models serve``) gets the whole model.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow.pyfunc

WEIGHTS, CONFIG = "weights", "config"
MODEL_NAME_IN_RUN = "model"  # the artifact path of the logged model inside its run


class TextClassifierPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import torch

        from mlsys.model.featurizer import HashingFeaturizer
        from mlsys.model.text_classifier import TextClassifier, TextClassifierConfig

        with open(context.artifacts[CONFIG]) as fh:
            cfg = json.load(fh)
        self.featurizer = HashingFeaturizer(**cfg["featurizer"])
        self.model = TextClassifier(TextClassifierConfig(**cfg["model"]))
        self.model.load_state_dict(torch.load(context.artifacts[WEIGHTS], map_location="cpu", weights_only=True))
        self.model.eval()

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from mlsys.model.text_classifier import predict_proba

        texts = model_input["text"].astype(str).tolist()
        proba = predict_proba(self.model, self.featurizer, texts).numpy()
        out = pd.DataFrame({"prediction": proba.argmax(axis=1).astype("int64")})
        for c in range(proba.shape[1]):
            out[f"proba_{c}"] = proba[:, c].astype("float64")
        return out


def log_model(model, featurizer, mcfg, example_texts: list[str]) -> str:
    """Log the model as an MLflow pyfunc with a signature and an input example; return its URI."""
    import dataclasses

    import mlflow
    import pandas as pd
    import torch
    from mlflow.models import infer_signature

    from mlsys.model.text_classifier import predict_proba

    example = pd.DataFrame({"text": example_texts})
    proba = predict_proba(model, featurizer, example_texts).numpy()
    output = pd.DataFrame({"prediction": proba.argmax(1).astype("int64"), "proba_0": proba[:, 0], "proba_1": proba[:, 1]})
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pt"
        config = Path(tmp) / "config.json"
        torch.save(model.state_dict(), weights)
        config.write_text(json.dumps({"featurizer": dataclasses.asdict(featurizer), "model": mcfg.to_json()}))
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=TextClassifierPyfunc(),
            artifacts={WEIGHTS: str(weights), CONFIG: str(config)},
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "pandas"],
            code_paths=[str(Path(__file__).resolve().parents[1])],
        )
    return info.model_uri
