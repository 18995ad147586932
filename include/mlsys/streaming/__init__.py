"""Streaming video inference with Krypton-style incremental CNN inference.

    incremental/  the engine (torch alone): change detection, per-position and box propagation, materialised views
    video         decoding (PyAV) and probing of segments
    watermark     a stream's segments and its exactly-once watermark (compare-and-set)
    stage         the stream stage: pending segments -> per-frame predictions datasets
    trigger       the AssetWatcher trigger on a stream's segment prefix (imported when DAGs are parsed: no torch)
    commands      ``mlsys stream-put``

Importing this package costs nothing; ``mlsys bench krypton`` lives in ``mlsys.bench.krypton``.
"""
