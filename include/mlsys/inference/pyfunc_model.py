"""The MLflow pyfunc wrapper: text in, class and probabilities out.

It carries the featurizer config and the weights, so any MLflow consumer
(``mlflow.pyfunc.load_model``, ``mlflow models serve``) gets the whole model.
"""

from __future__ import annotations

import json

import mlflow.pyfunc

WEIGHTS, CONFIG = "weights", "config"


class TextClassifierPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import torch

        from mlsys.training.featurizer import HashingFeaturizer
        from mlsys.training.model import TextClassifier, TextClassifierConfig

        with open(context.artifacts[CONFIG]) as fh:
            cfg = json.load(fh)
        self.featurizer = HashingFeaturizer(**cfg["featurizer"])
        self.model = TextClassifier(TextClassifierConfig(**cfg["model"]))
        self.model.load_state_dict(torch.load(context.artifacts[WEIGHTS], map_location="cpu", weights_only=True))
        self.model.eval()

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from mlsys.training.trainer import predict_proba

        texts = model_input["text"].astype(str).tolist()
        proba = predict_proba(self.model, self.featurizer, texts).numpy()
        out = pd.DataFrame({"prediction": proba.argmax(axis=1).astype("int64")})
        for c in range(proba.shape[1]):
            out[f"proba_{c}"] = proba[:, c].astype("float64")
        return out
