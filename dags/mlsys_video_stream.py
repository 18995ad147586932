"""
### mlsys video stream: incremental CNN inference on video segments, exactly once

Runs when new video segments land under `streams/<stream>/segments/` in the
storage root (the `video_segments` Asset, whose watcher runs in the triggerer:
no worker waits or polls). It processes the stream named by the triggering
event (the watcher watches `MLSYS_STREAM`); a manual run processes its
`stream` param, or `MLSYS_STREAM` when that is empty. Each run processes the segments after the stream's
watermark, in order, carrying the engine's materialised state from the last
committed segment (Krypton-style incremental inference: only the changed
regions of each frame are recomputed). By default the network is the
ImageNet-trained EfficientNet-Lite0 (`model`; `vgg16` is the FLOP-heavy
seeded one): each frame's row names its ImageNet class (id, name,
probability) and top 5. Per segment it writes the per-frame
predictions as a new version of the `video_predictions_<stream>` dataset,
then the state, then moves the watermark, so a crash and retry neither skips
nor duplicates a frame. A segment that arrives out of order, or is corrupt,
fails the run with a clear error after the segments before it are committed.
Frames/s, changed area, speedup, the share of frames refreshed and, on sampled
frames, the agreement with full inference (top-1, top-5 overlap, top-class
probability) go to MLflow, with a plot of the per-frame changed share and latency.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from mlsys.orchestration import DEFAULT_ARGS, VIDEO_PREDICTIONS, VIDEO_SEGMENTS, form, run_streams
from mlsys.streaming.stage import StreamSpec


@dag(
    dag_id="mlsys_video_stream",
    schedule=[VIDEO_SEGMENTS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one writer per watermark
    tags=["mlsys", "serve", "stream"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params={
        # a triggering event's stream wins; this param serves a manual run; empty: MLSYS_STREAM
        "stream": Param(None, type=["null", "string"], description="Stream name for a manual run (empty: "
                        "MLSYS_STREAM); a run triggered by new segments processes the stream they came from."),
        **form(StreamSpec, "mode", "model", "weights", "width", "size", "batch_frames", "max_segments", "error_every"),
    },
)
def mlsys_video_stream():
    @task(outlets=[VIDEO_PREDICTIONS])
    def stream(params=None, triggering_asset_events=None) -> dict:
        return run_streams(params, triggering_asset_events)  # the event's stream, else the param, else MLSYS_STREAM

    stream()


dag = mlsys_video_stream()
