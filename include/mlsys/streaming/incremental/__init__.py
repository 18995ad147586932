"""Krypton-style incremental CNN inference (torch alone).

    config       EngineConfig: thresholds, tiles, modes, validated at construction
    presets      named EngineConfigs (exact, approx)
    region       change detection: boxes and per-pixel masks
    propagation  how a change spreads through a layer (pointwise, window, add, full)
    graph        the network's plan: layers and their propagation rules
    views        the materialised views of every layer's output
    engine       IncrementalEngine: runs frames, refreshes only what changed
    synthetic    synthetic frames for tests and the benchmark
"""

from mlsys.streaming.incremental.config import EngineConfig
from mlsys.streaming.incremental.engine import FrameSizeError, FrameStat, IncrementalEngine
from mlsys.streaming.incremental.propagation import UnsupportedLayerError
from mlsys.streaming.incremental.region import Box, detect_changes, detect_pixels, merge_boxes

__all__ = ["Box", "EngineConfig", "FrameSizeError", "FrameStat", "IncrementalEngine", "UnsupportedLayerError",
           "detect_changes", "detect_pixels", "merge_boxes"]
