"""Krypton-style incremental CNN inference (torch alone).

    config       EngineConfig: thresholds, tiles, modes, validated at construction
    presets      named EngineConfigs (exact, approx)
    region       change detection: boxes and per-pixel masks
    propagation  how a change spreads through a layer (pointwise, window, add, full)
    graph        the network's plan: layers and their propagation rules
    views        the materialised views of every layer's output
    engine       IncrementalEngine: runs frames per position, refreshes only what changed
    boxes        the engine's box path (Krypton's patches, multi-frame batches)
    occlusion    occlusion-based explanation: heatmaps, exact or approximate (tau, drill-down), tau tuning
    quality      agreement with full inference (top-1, top-5, top-class probability), SSIM
    efficientnet EfficientNet-Lite0 with its ImageNet weights and class names (imagenet_classes.json)
    synthetic    synthetic frames for tests and the benchmark
"""

from __future__ import annotations

import importlib
from typing import Any

# Names load lazily: a spec that reads the modes or presets pulls in no torch.
_EXPORTS = {
    "EngineConfig": "config", "FrameSizeError": "engine", "FrameStat": "engine", "IncrementalEngine": "engine",
    "UnsupportedLayerError": "propagation", "Box": "region", "detect_changes": "region", "detect_pixels": "region",
    "merge_boxes": "region", "OcclusionConfig": "occlusion", "OcclusionExplainer": "occlusion", "Heatmap": "occlusion",
    "tune_tau": "occlusion", "agreement": "quality", "ssim": "quality", "efficientnet_lite0": "efficientnet",
    "imagenet_classes": "efficientnet",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
