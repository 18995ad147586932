"""
### mlsys video stream: incremental CNN inference on video segments, exactly once

Runs when new video segments land under `streams/<stream>/segments/` in the
storage root (the `video_segments` Asset, whose watcher runs in the triggerer:
no worker waits or polls). Each run processes the segments after the stream's
watermark, in order, carrying the engine's materialised state from the last
committed segment (Krypton-style incremental inference: only the changed
regions of each frame are recomputed). Per segment it writes the per-frame
predictions as a new version of the `video_predictions_<stream>` dataset,
then the state, then moves the watermark, so a crash and retry neither skips
nor duplicates a frame. A segment that arrives out of order, or is corrupt,
fails the run with a clear error after the segments before it are committed.
Frames/s, changed area, speedup and sampled error against full inference go
to MLflow, with a plot of the per-frame changed share and latency.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from mlsys.orchestration import DEFAULT_ARGS, VIDEO_PREDICTIONS, VIDEO_SEGMENTS, run_in_task


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
        "stream": Param("camera", type="string", description="Stream name: segments under streams/<stream>/segments/."),
        "mode": Param("exact", type="string", enum=["exact", "approx"],
                      description="exact: outputs equal full inference; approx: Krypton's tau and refresh policy."),
        "model": Param("vgg16", type="string", enum=["vgg16", "resnet18", "small"],
                       description="CNN of the model zoo (seeded random weights)."),
        "width": Param(0.25, type="number", exclusiveMinimum=0, description="Channel-width multiplier of the CNN."),
        "size": Param(224, type="integer", minimum=16, description="Frames are resized to size x size pixels."),
        "batch_frames": Param(1, type="integer", minimum=1,
                              description="Frames propagated together (Krypton's multi-query, by boxes); "
                                          "1: each frame per position, the fastest here."),
        "max_segments": Param(0, type="integer", minimum=0, description="Segments per run (0: all pending)."),
        "error_every": Param(10, type="integer", minimum=0,
                             description="Every N-th frame also runs in full to measure the error (0: never)."),
    },
)
def mlsys_video_stream():
    @task(outlets=[VIDEO_PREDICTIONS])
    def stream(params=None) -> dict:
        return run_in_task("stream", params)

    stream()


dag = mlsys_video_stream()
