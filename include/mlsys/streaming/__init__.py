"""Streaming video inference with Krypton-style incremental CNN inference.

    incremental/  the engine (torch alone): change detection, per-position and box propagation, materialised views
    video         decoding (PyAV) and probing of segments
    watermark     a stream's segments and its exactly-once watermark (compare-and-set)
    networks      the networks by name: the trained EfficientNet-Lite0 (default), the zoo's CNNs
    stage         the stream stage: pending segments -> per-frame predictions datasets (ImageNet classes)
    explain       the explain stage, ``mlsys explain``: an occlusion heatmap of an image, logged to MLflow
    trigger       the AssetWatcher trigger on a stream's segment prefix (imported when DAGs are parsed: no torch)
    commands      ``mlsys stream-put``

Importing this package costs nothing; ``mlsys bench krypton`` and ``mlsys bench explain`` live in ``mlsys.bench``.
"""
