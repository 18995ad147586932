"""``mlsys bench krypton``: incremental vs full per-frame inference, side by side in one run (CPU).

    mlsys bench krypton                              # carphone, bikes, synthetic; exact and approx
    mlsys bench krypton --video my.mp4 --mode approx --frames 60
    mlsys bench krypton --synthetic --mode exact

For every stream and mode, the first frame becomes the engine's base (full
inference, untimed); then frame by frame, full inference on the actual frame
is timed, then the engine on the same frame, interleaved so that a loaded
machine slows both alike. Refreshes during the stream are timed and counted.
Reported per stream and mode (``frames`` = timed frames):

    full_fps, ours_fps, speedup           measured frames/s and their ratio
    theoretical_speedup                   FLOPs of full inference / FLOPs the detected regions need (refreshes included)
    flops_speedup                         FLOPs of full inference / FLOPs the engine spent (boxes merged to save
                                          kernel calls compute more FLOPs in less time)
    changed_area                          mean share of the frame covered by the detected boxes
    max_rel_error, top1_agreement         ours vs full inference on the actual frames (||y - y_full|| / ||y_full||)
    max_rel_error_vs_seen                 ours vs full inference on the frame the engine saw (exact mode: <= 1e-4)

The last line is one JSON object: {"results": [...]}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from mlsys.model.cnn import build_cnn
from mlsys.settings import settings
from mlsys.streaming.incremental.config import EngineConfig
from mlsys.streaming.incremental.engine import IncrementalEngine
from mlsys.streaming.incremental.presets import PRESETS
from mlsys.streaming.incremental.synthetic import synthetic_frames

VIDEOS = ("carphone_pristine.mp4", "bikes.mp4")

EXACT, APPROX = PRESETS["exact"], PRESETS["approx"]


def _rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).flatten().norm() / ref.flatten().norm().clamp_min(1e-12))


def run_stream(name: str, frames: torch.Tensor, model: torch.nn.Module, config: EngineConfig) -> dict:
    """Benchmark one stream (N, 3, H, W) in one mode; returns one result row."""
    engine = IncrementalEngine(model, tuple(frames.shape[1:]), config)
    with torch.no_grad():
        model(frames[:1])  # warm-up: allocator and kernels, for both sides
    engine.process(frames[:1])  # the base frame: materialised once, before the clock starts (both sides pay it)
    frames = frames[1:]
    full_s = ours_s = 0.0
    errors, seen_errors, agree, stats = [], [], [], []
    step = config.batch_frames
    for i in range(0, len(frames), step):
        chunk = frames[i:i + step]
        with torch.no_grad():
            t0 = time.perf_counter()
            full = torch.cat([model(f[None]) for f in chunk])
            full_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        ours, chunk_stats = engine.process(chunk)
        ours_s += time.perf_counter() - t0
        stats += chunk_stats
        errors += [_rel_error(o, f) for o, f in zip(ours, full)]
        agree += (ours.argmax(-1) == full.argmax(-1)).tolist()
        with torch.no_grad():  # the last frame of the chunk, as the engine saw it (its committed input view)
            seen = model(engine.views.tensors[engine.input_name])
        seen_errors.append(_rel_error(ours[-1:], seen))
    n = len(frames)
    flops, needed = sum(s.flops for s in stats), sum(s.min_flops for s in stats)
    return {
        "video": name, "mode": config.mode, "frames": n, "size": list(frames.shape[2:]),
        "full_fps": n / full_s, "ours_fps": n / ours_s, "speedup": full_s / ours_s,
        "theoretical_speedup": engine.full_flops * n / needed,
        "speedup_share_of_theoretical": (full_s / ours_s) / (engine.full_flops * n / needed),
        "flops_speedup": engine.full_flops * n / flops,
        "changed_area": sum(s.box_share for s in stats) / n,
        "changed_pixels": sum(s.changed_share for s in stats) / n,
        "max_rel_error": max(errors), "mean_rel_error": sum(errors) / n,
        "top1_agreement": sum(agree) / n, "max_rel_error_vs_seen": max(seen_errors),
        "refreshes": sum(s.refreshed for s in stats), "config": asdict(config),
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
    parser.add_argument("--model", choices=("vgg16", "resnet18", "small"), default="vgg16")
    parser.add_argument("--width", type=float, default=1.0, help="channel-width multiplier (1.0: VGG-16's widths)")
    parser.add_argument("--batch-frames", type=int, default=1, help="frames propagated together (multi-query)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--regions", choices=("pixels", "boxes"), default="pixels",
                        help="per-position masks (default) or Krypton's boxes (needed for --batch-frames > 1)")
    parser.add_argument("--threshold", type=float, help="per-pixel change threshold in [0, 255] (default: the "
                        "mode's preset, 16 exact, 40 approx)")
    parser.add_argument("--tau", type=float, help="approx: patch growth cut at this share of a map (preset 0.01)")
    parser.add_argument("--refresh-every", type=int, help="approx: a new base frame every N frames (preset 12)")
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error(f"--frames {args.frames}: use at least 2 frames")
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = {"regions": args.regions, "batch_frames": args.batch_frames}
    for key, value in (("threshold", None if args.threshold is None else args.threshold / 255), ("tau", args.tau),
                       ("refresh_every", args.refresh_every)):
        if value is not None:
            overrides[key] = value
    presets = {"exact": [EXACT], "approx": [APPROX], "both": [EXACT, APPROX]}[args.mode]
    try:
        modes = [replace(c, **overrides) for c in presets]
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
    model = build_cnn(args.model, width=args.width, num_classes=1000, seed=0)
    results = []
    for name, frames in streams:
        for config in modes:
            row = run_stream(name, frames, model, config)
            row.update(model=args.model, width=args.width, threads=torch.get_num_threads())
            results.append(row)
            print(f"{name:24s} {row['mode']:6s} full {row['full_fps']:6.2f} fps  ours {row['ours_fps']:6.2f} fps  "
                  f"speedup {row['speedup']:5.2f}x (theory {row['theoretical_speedup']:5.2f}x)  "
                  f"area {row['changed_area']:.3f}  err {row['max_rel_error']:.2e}  top1 {row['top1_agreement']:.3f}",
                  file=sys.stderr, flush=True)
    print(json.dumps({"results": results}))
    return 0
