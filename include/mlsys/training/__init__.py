"""train: the training engine (torch only) and the train stage around it.

The engine modules (featurizer, model, loss, trainer) import torch alone; the
stage (``mlsys.training.stage``) adds storage and MLflow.

Multi-device engine modules (torch alone; import them by name, they load torch.distributed):
``partitioner`` (split into stages, balance by time / size), ``microbatch``,
``pipeline`` (GPipe / 1F1B strategy), ``ddp`` (DistributedDataParallel strategy),
``checkpoint``, ``launcher`` (torchrun), ``job`` (the torchrun entry point),
``benchmark`` (``mlsys bench pipeline``). ``report`` logs their output to MLflow.
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
