"""The shipped models, used by train, evaluate, batch, serve and stream (torch and numpy; ``pyfunc`` adds MLflow).

    featurizer         HashingFeaturizer: hashed words, bigrams and character n-grams (the reference)
    vector_featurizer  VectorFeaturizer: the same ids, vectorised over Arrow buffers (numpy)
    text_classifier    TextClassifier (EmbeddingBag -> residual MLP -> head), predict_proba
    loss               the noise-aware loss on soft labels and per-row weights
    cnn                the CNNs the streaming engine runs (small, VGG16, ResNet18)
    pyfunc             the MLflow pyfunc wrapper and log_model

Imports no other mlsys package: every stage package may use it.
"""

from mlsys.model.featurizer import HashingFeaturizer
from mlsys.model.loss import noise_aware_loss
from mlsys.model.text_classifier import (
    TextClassifier,
    TextClassifierConfig,
    predict_proba,
)

__all__ = ["HashingFeaturizer", "TextClassifier", "TextClassifierConfig", "noise_aware_loss", "predict_proba"]
