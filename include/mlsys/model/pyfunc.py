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
BATCH_ROWS = 4096  # rows per forward pass: predict_proba's batches, so the floats are the same bit for bit


class TextClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """``predict(df)``: the texts of ``df["text"]`` -> ``prediction`` and ``proba_<class>`` columns.

    Featurised with the VectorFeaturizer over the column's UTF-8 buffers (numpy over a
    whole batch of texts at once, the ids of HashingFeaturizer exactly), so every MLflow
    consumer of the model gets the fast path mlsys's own scorer runs. Threads: torch's
    default (its intra-op pool, one per core unless OMP_NUM_THREADS or
    ``torch.set_num_threads`` says otherwise), as in any torch process.
    """

    def load_context(self, context):
        from mlsys.model import artifact
        from mlsys.model.vector_featurizer import VectorFeaturizer

        folder = Path(context.artifacts[artifact.CONFIG_FILE]).parent
        # the pyfunc already runs the artifact's code, so checking the signature here would protect nothing;
        # it would only stop a user without the verify key from loading the model
        self.model, self.featurizer = artifact.read(folder, "the logged model", verify=False)
        self.vector = VectorFeaturizer.like(self.featurizer)
        self.threshold = artifact.threshold(folder)  # the operating point, if any: decided as mlsys's Scorer does

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd
        import pyarrow as pa
        import torch

        # any value as its text, as before; a pandas string column becomes Arrow's without a copy
        column = pa.array(model_input["text"].astype(str), type=pa.large_string(), from_pandas=True)
        if isinstance(column, pa.ChunkedArray):  # a column read from Parquet in pieces: batches count from row 0
            column = column.combine_chunks()
        if column.null_count:
            raise ValueError(f"column 'text' has {column.null_count} missing values; fill or drop them before predict")
        proba = np.empty((len(column), self.model.config.num_classes), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(column), BATCH_ROWS):
                ids, starts = self.vector.encode_utf8(*_utf8(column.slice(start, BATCH_ROWS)))
                logits = self.model(torch.from_numpy(ids), torch.from_numpy(starts))  # (B, C)
                proba[start:start + BATCH_ROWS] = torch.softmax(logits, dim=-1).numpy()
        threshold = getattr(self, "threshold", None) if proba.shape[1] == 2 else None
        prediction = proba.argmax(axis=1) if threshold is None else proba[:, 1] >= threshold
        out = pd.DataFrame({"prediction": prediction.astype("int64")})
        for c in range(proba.shape[1]):
            out[f"proba_{c}"] = proba[:, c].astype("float64")
        return out


def _utf8(column) -> tuple:
    """(data (B,) uint8, offsets (N+1,) int64) of a pyarrow large_string array: its own buffers, not copied."""
    import numpy as np

    n = len(column)
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset: column.offset + n + 1]
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8) if n and column.buffers()[2] else np.zeros(0, np.uint8)
    return data[offsets[0]: offsets[-1]], offsets - offsets[0]


def log_model(model, featurizer, mcfg, example_texts: list[str], operating_point: dict | None = None) -> str:
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
        files = artifact.write(Path(tmp), model, featurizer, mcfg, operating_point)
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
