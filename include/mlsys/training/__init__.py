"""train: the training engine (torch only) and the train stage around it.

The engine modules (featurizer, model, loss, trainer) import torch alone; the
stage (``mlsys.training.stage``) adds storage and MLflow.
"""

from mlsys.training.featurizer import HashingFeaturizer
from mlsys.training.loss import noise_aware_loss
from mlsys.training.model import TextClassifier, TextClassifierConfig
from mlsys.training.trainer import TrainConfig, predict_proba, train

__all__ = [
    "HashingFeaturizer",
    "TextClassifier",
    "TextClassifierConfig",
    "TrainConfig",
    "noise_aware_loss",
    "predict_proba",
    "train",
]
