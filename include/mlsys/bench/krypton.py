"""``mlsys bench krypton``: incremental vs full per-frame inference on video, side by side in one run (CPU).

    mlsys bench krypton                                  # EfficientNet-Lite0 (trained): carphone, bikes, synthetic
    mlsys bench krypton --model vgg16                    # the FLOP-heavy VGG-16-like network (seeded weights)
    mlsys bench krypton --video my.mp4 --mode approx --frames 60

For every stream and mode, the first frame becomes the engine's base (full
inference, untimed); then frame by frame, full inference on the actual frame
is timed, then the engine on the same frame, interleaved so that a loaded
machine slows both alike. Full inference runs through the same fused,
channels-last graph as the engine (``IncrementalEngine.full``), with the same
threads. Each stream and mode runs ``--repeats`` times (3) from a fresh
engine; the timings are their medians, the quality figures (deterministic)
the first run's. Reported per stream and mode (``frames`` = timed frames):

    full_fps, ours_fps, speedup           measured frames/s and their ratio (medians)
    theoretical_speedup                   FLOPs of full inference / FLOPs the detected regions need (refreshes included)
    speedup_share_of_theoretical          speedup / theoretical_speedup
    top1_agreement, top5_overlap          ours vs full inference of the actual frames: same top class; share of its
    top_prob_abs_diff                     top 5 in ours; mean |p_ours - p_full| of full inference's top class
    refreshed_share                       share of frames that got full inference (a new base frame)
    max_rel_error                         ||y - y_full|| / ||y_full|| of the logits: reported, not a target
    max_rel_error_vs_seen                 ours vs full inference on the frame the engine saw (exact mode: <= 1e-5)
    top_class                             full inference's most frequent class (its name, for a trained network)

The last line is one JSON object: {"results": [...]}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import torch

from mlsys.settings import settings
from mlsys.streaming import networks
from mlsys.streaming.incremental.config import EngineConfig
from mlsys.streaming.incremental.engine import IncrementalEngine
from mlsys.streaming.incremental.presets import preset
from mlsys.streaming.incremental.quality import agreement
from mlsys.streaming.incremental.synthetic import synthetic_frames

VIDEOS = ("carphone_pristine.mp4", "bikes.mp4")


def _rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).flatten().norm() / ref.flatten().norm().clamp_min(1e-12))


def _once(frames: torch.Tensor, model: torch.nn.Module, config: EngineConfig) -> dict:
    """One timed pass over a stream: timings, outputs, stats."""
    engine = IncrementalEngine(model, tuple(frames.shape[1:]), config)
    engine.full(frames[0])  # warm-up: allocator and kernels, for both sides
    engine.process(frames[:1])  # the base frame: materialised once, before the clock starts (both sides pay it)
    full_s = ours_s = 0.0
    ours_out, full_out, seen_errors, stats = [], [], [], []
    step = config.batch_frames
    for i in range(1, len(frames), step):
        chunk = frames[i:i + step]
        t0 = time.perf_counter()
        full = torch.cat([engine.full(f) for f in chunk])
        full_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        ours, chunk_stats = engine.process(chunk)
        ours_s += time.perf_counter() - t0
        stats += chunk_stats
        ours_out.append(ours)
        full_out.append(full)
        seen = engine.full(engine.views.tensors[engine.input_name][0])  # the chunk's last frame, as the engine saw it
        seen_errors.append(_rel_error(ours[-1:], seen))
    return {"full_s": full_s, "ours_s": ours_s, "ours": torch.cat(ours_out), "full": torch.cat(full_out),
            "seen_errors": seen_errors, "stats": stats, "full_flops": engine.full_flops, "head": engine.head_flops}


def run_stream(name: str, frames: torch.Tensor, model: torch.nn.Module, config: EngineConfig, repeats: int = 3,
               names: tuple[str, ...] | None = None) -> dict:
    """Benchmark one stream (N, 3, H, W) in one mode, ``repeats`` times; returns one result row."""
    runs = [_once(frames, model, config) for _ in range(repeats)]
    first, n = runs[0], len(frames) - 1
    stats = first["stats"]
    needed = max(sum(s.min_flops for s in stats), first["head"] * n, 1.0)
    theory = first["full_flops"] * n / needed
    speedup = statistics.median(r["full_s"] / r["ours_s"] for r in runs)
    quality = agreement(first["ours"], first["full"])
    top = Counter(first["full"].argmax(-1).tolist()).most_common(1)[0][0]
    return {
        "video": name, "mode": config.mode, "frames": n, "size": list(frames.shape[2:]), "repeats": repeats,
        "full_fps": statistics.median(n / r["full_s"] for r in runs),
        "ours_fps": statistics.median(n / r["ours_s"] for r in runs),
        "speedup": speedup, "speedups": [r["full_s"] / r["ours_s"] for r in runs],
        "theoretical_speedup": theory, "speedup_share_of_theoretical": speedup / theory,
        "flops_speedup": first["full_flops"] * n / max(sum(s.flops for s in stats), 1.0),
        "changed_area": sum(s.box_share for s in stats) / n,
        "changed_pixels": sum(s.changed_share for s in stats) / n,
        "top1_agreement": quality["top1_agreement"], "top5_overlap": quality["top5_overlap"],
        "top_prob_abs_diff": quality["top_prob_abs_diff"], "max_rel_error": quality["max_rel_error"],
        "mean_rel_error": sum(_rel_error(o, f) for o, f in zip(first["ours"], first["full"])) / n,
        "max_rel_error_vs_seen": max(first["seen_errors"]),
        "refreshes": sum(s.refreshed for s in stats), "refreshed_share": sum(s.refreshed for s in stats) / n,
        "top_class": names[top] if names else top, "config": asdict(config),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys bench krypton", description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", action="append", default=[], help="an mp4 to stream (repeatable); default: "
                        "the shipped carphone and bikes videos, plus the synthetic stream")
    parser.add_argument("--synthetic", action="store_true", help="a static background with one moving object "
                        "covering 5%% of the frame")
    parser.add_argument("--mode", choices=("exact", "approx", "both"), default="both")
    parser.add_argument("--frames", type=int, default=31, help="frames per stream, the base frame included (default 31)")
    parser.add_argument("--size", type=int, default=224, help="frame side in pixels (default 224)")
    parser.add_argument("--model", choices=networks.MODELS, default=networks.TRAINED,
                        help=f"default {networks.TRAINED} (ImageNet-trained); vgg16: the FLOP-heavy case")
    parser.add_argument("--weights", default="", help=f"{networks.TRAINED}: your own state dict file")
    parser.add_argument("--width", type=float, default=1.0, help="zoo CNNs: channel-width multiplier (1.0: VGG-16's)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per stream and mode; timings are medians (3)")
    parser.add_argument("--batch-frames", type=int, default=1, help="frames propagated together (multi-query)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--regions", choices=("pixels", "boxes"), default="pixels",
                        help="per-position masks (default) or Krypton's boxes (needed for --batch-frames > 1)")
    parser.add_argument("--threshold", type=float, help="per-pixel change threshold in [0, 255] (default: the "
                        "mode's preset, 16 exact, 40 approx)")
    parser.add_argument("--tau", type=float, help="approx: patch growth cut at this share of a map (preset 0.01)")
    parser.add_argument("--refresh-every", type=int, help="approx: a new base frame every N frames (preset: 12; "
                        "30 for efficientnet-lite0)")
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error(f"--frames {args.frames}: use at least 2 frames")
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: use at least 1 run")
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = {"regions": args.regions, "batch_frames": args.batch_frames}
    for key, value in (("threshold", None if args.threshold is None else args.threshold / 255), ("tau", args.tau),
                       ("refresh_every", args.refresh_every)):
        if value is not None:
            overrides[key] = value
    modes = ["exact", "approx"] if args.mode == "both" else [args.mode]
    try:
        configs = [replace(preset(m, args.model), **overrides) for m in modes]
    except ValueError as e:
        parser.error(str(e))

    from mlsys.streaming.video import read_video

    size = (args.size, args.size)
    streams: list[tuple[str, torch.Tensor]] = []
    paths = args.video or ([] if args.synthetic else [str(Path(settings().data_dir) / "video" / v) for v in VIDEOS])
    for path in paths:
        streams.append((Path(path).name, read_video(path, size, args.frames)))
    if args.synthetic or not args.video:
        streams.append(("synthetic-5%", synthetic_frames(args.frames, args.size, 0.05)))
    model = networks.build(args.model, args.size, args.width, 0, args.weights)
    names = networks.class_names(args.model)
    results = []
    for name, frames in streams:
        for config in configs:
            row = run_stream(name, frames, model, config, args.repeats, names)
            row.update(model=args.model, width=args.width if args.model != networks.TRAINED else 1.0,
                       threads=torch.get_num_threads())
            results.append(row)
            print(f"{name:24s} {row['mode']:6s} full {row['full_fps']:6.2f} fps  ours {row['ours_fps']:6.2f} fps  "
                  f"speedup {row['speedup']:5.2f}x (theory {row['theoretical_speedup']:5.2f}x)  "
                  f"area {row['changed_area']:.3f}  top1 {row['top1_agreement']:.3f}  top5 {row['top5_overlap']:.3f}  "
                  f"refreshed {row['refreshed_share']:.2f}", file=sys.stderr, flush=True)
    print(json.dumps({"results": results}))
    return 0
