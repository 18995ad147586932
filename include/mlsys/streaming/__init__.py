"""Streaming video inference with Krypton-style incremental CNN inference.

The engine modules (config, region, propagation, graph, views, engine, synthetic) import
torch alone; video decoding (PyAV), the watermark, the stream stage, the
benchmark and the segment trigger add storage, MLflow and Airflow. Names load
lazily, so the trigger (imported when DAGs are parsed) pulls in no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Box": "mlsys.streaming.region", "detect_changes": "mlsys.streaming.region",
    "detect_pixels": "mlsys.streaming.region",
    "merge_boxes": "mlsys.streaming.region", "UnsupportedLayerError": "mlsys.streaming.propagation",
    "EngineConfig": "mlsys.streaming.config", "FrameSizeError": "mlsys.streaming.engine",
    "FrameStat": "mlsys.streaming.engine", "IncrementalEngine": "mlsys.streaming.engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mlsys.streaming' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
