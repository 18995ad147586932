"""The MLflow pyfunc wrapper: text in, class and probabilities out.

Logged as a model *from code* (model/served.py is its Python, no pickle), with
the files of model/artifact.py (config JSON, safetensors weights, the pipeline's
signature), so any MLflow consumer (``mlflow.pyfunc.load_model``, ``mlflow
models serve``) gets the whole model, and mlsys's own loaders read the files
without running anything from the artifact store.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow.pyfunc

MODEL_NAME_IN_RUN = "model"  # the artifact path of the logged model inside its run


class TextClassifierPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from mlsys.model import artifact

        folder = Path(context.artifacts[artifact.CONFIG_FILE]).parent
        # the pyfunc already runs the artifact's code, so checking the signature here would protect nothing;
        # it would only stop a user without the verify key from loading the model
        self.model, self.featurizer = artifact.read(folder, "the logged model", verify=False)

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
    """Log the model as an MLflow pyfunc from code, with a signature and an input example; return its URI."""
    import mlflow
    import pandas as pd
    import torch
    from mlflow.models import infer_signature

    from mlsys.model import artifact
    from mlsys.model.text_classifier import predict_proba

    example = pd.DataFrame({"text": example_texts})
    proba = predict_proba(model, featurizer, example_texts).numpy()
    output = pd.DataFrame({"prediction": proba.argmax(1).astype("int64"), "proba_0": proba[:, 0], "proba_1": proba[:, 1]})
    with tempfile.TemporaryDirectory() as tmp:
        files = artifact.write(Path(tmp), model, featurizer, mcfg)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(Path(__file__).with_name("served.py")),
            artifacts={p.name: str(p) for p in files},
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "pandas",
                              "safetensors"],
            code_paths=[str(Path(__file__).resolve().parents[1])],
        )
    return info.model_uri
