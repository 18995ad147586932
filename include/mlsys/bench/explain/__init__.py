"""``mlsys bench explain``: occlusion heatmaps (Krypton's OBE), incremental vs full inference of every copy (CPU).

    mlsys bench explain                                   # VGG-16-like, 224x224, patch 16, stride 4, exact + approx
    mlsys bench explain --model efficientnet-lite0 --image cat.jpg --mode approx
    mlsys bench explain --size 112 --repeats 1            # a quick look

One image (default: scikit-image's ``chelsea``, a tabby cat, when installed;
otherwise pass ``--image``). The grid has ((size - patch) / stride + 1)^2
positions (2,809 at 224, 16, 4). Reported per mode:

    full_s            full inference of every occluded copy, batched ``--batch`` at a time, through the same fused
                      channels-last graph and threads as the engine: timed on ``--full-positions`` copies spread
                      over the grid (median of ``--repeats`` runs) and scaled to the grid (a full run of VGG-16 at
                      224 takes ~8 minutes on 2 cores)
    ours_s, speedup   the incremental heatmap's wall time (median of ``--repeats``) and full_s / ours_s
    theoretical_speedup   FLOPs of full inference at every grid position / FLOPs the engine spent
    ssim              approx: SSIM of its heatmap against the exact one (exact: 1)
    tau               approx: the projective-field threshold, tuned (``--tau auto``) to the smallest with
                      SSIM >= --target-ssim, or given
    max_rel_error_vs_full   exact: the logits' relative error against full inference on the timed copies

The last line is one JSON object: {"results": [...]}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace

import torch

from mlsys.streaming import networks
from mlsys.streaming.incremental.occlusion import TAUS, OcclusionConfig, OcclusionExplainer, grid, tune_tau
from mlsys.streaming.incremental.quality import ssim


def _image(path: str, size: int) -> tuple[str, torch.Tensor]:
    from mlsys.streaming.explain import load_image

    if path:
        return path, load_image(path, size)
    try:
        from skimage import data
    except ImportError:
        raise SystemExit("mlsys bench explain: scikit-image is not installed: pass --image PATH") from None
    import torch.nn.functional as F

    chelsea = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255
    return "skimage:chelsea", F.interpolate(chelsea[None], size=(size, size), mode="bilinear", antialias=True)[0]


def _full(explainer: OcclusionExplainer, image: torch.Tensor, ys: list[int], xs: list[int], batch: int):
    """Full inference of the occluded copies at (ys, xs), ``batch`` at a time: (seconds, logits)."""
    out, seconds = [], 0.0
    for start in range(0, len(ys), batch):
        copies = explainer.occluded(image, ys[start:start + batch], xs[start:start + batch])
        t0 = time.perf_counter()
        out.append(explainer.engine.full(copies))
        seconds += time.perf_counter() - t0
    return seconds, torch.cat(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys bench explain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=networks.MODELS, default="vgg16",
                        help="default vgg16 (Krypton's network, seeded weights, width 1); efficientnet-lite0: trained")
    parser.add_argument("--image", default="", help="an image file (default: scikit-image's chelsea)")
    parser.add_argument("--mode", choices=("exact", "approx", "both"), default="both")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--coarse-stride", type=int, default=16, help="approx: the coarse pass's stride S1")
    parser.add_argument("--top-share", type=float, default=0.25, help="approx: share r drilled down at the stride")
    parser.add_argument("--tau", default="auto", help="approx: a threshold in (0, 1], or auto (tuned to --target-ssim)")
    parser.add_argument("--target-ssim", type=float, default=0.9)
    parser.add_argument("--batch", type=int, default=16, help="occluded copies per call, both sides")
    parser.add_argument("--full-positions", type=int, default=128, help="copies full inference is timed on (0: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side; medians")
    parser.add_argument("--width", type=float, default=1.0, help="zoo CNNs: channel-width multiplier")
    parser.add_argument("--weights", default="", help=f"{networks.TRAINED}: your own state dict file")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    try:
        tau = None if args.tau == "auto" else float(args.tau)
        config = OcclusionConfig(patch=args.patch, stride=args.stride, coarse_stride=args.coarse_stride,
                                 top_share=args.top_share, batch=args.batch)
        if tau is not None:  # a bad tau fails here, before any inference
            replace(config, mode="approx", tau=tau)
    except ValueError as exc:
        parser.error(str(exc))
    if args.repeats < 1 or args.patch > args.size:
        parser.error(f"--repeats {args.repeats} --patch {args.patch}: use at least 1 run and a patch <= --size")
    if args.threads:
        torch.set_num_threads(args.threads)

    name, image = _image(args.image, args.size)
    model = networks.build(args.model, args.size, args.width, 0, args.weights)
    names = networks.class_names(args.model)
    shape = tuple(image.shape)
    exact = OcclusionExplainer(model, shape, config)
    if args.mode == "approx":  # the exact heatmap is the reference only: one run, untimed
        runs = [exact.explain(image)]
    else:
        exact.explain(image)  # warm-up, untimed
        runs = [exact.explain(image) for _ in range(args.repeats)]
    heat = runs[0]
    ys, xs = grid(args.size, args.patch, args.stride), grid(args.size, args.patch, args.stride)
    cells = [(y, x) for y in ys for x in xs]
    step = max(1, len(cells) // args.full_positions) if args.full_positions else 1
    sample = cells[::step][:args.full_positions or None]
    sy, sx = [y for y, _ in sample], [x for _, x in sample]
    full_runs = [_full(exact, image, sy, sx, args.batch) for _ in range(args.repeats)]
    full_s = statistics.median(s for s, _ in full_runs) * len(cells) / len(sample)
    ours_logits, _ = exact.logits(sy, sx)
    reference = full_runs[0][1]
    error = float(((ours_logits - reference).norm(dim=-1) / reference.norm(dim=-1).clamp_min(1e-12)).max())
    common = {"model": args.model, "image": name, "size": args.size, "patch": args.patch, "stride": args.stride,
              "grid": len(cells), "full_positions_timed": len(sample), "full_s": full_s, "repeats": args.repeats,
              "target": heat.target, "target_name": names[heat.target] if names else str(heat.target),
              "probability": heat.base_prob, "threads": torch.get_num_threads()}
    results = []
    if args.mode in ("exact", "both"):
        ours = statistics.median(r.seconds for r in runs)
        results.append({**common, "mode": "exact", "ours_s": ours, "speedup": full_s / ours, "ssim": 1.0,
                        "theoretical_speedup": heat.theoretical_speedup, "positions": heat.positions, "tau": 1.0,
                        "max_rel_error_vs_full": error})
    if args.mode in ("approx", "both"):
        tried: list[tuple[float, float]] = []
        if tau is None:
            tau, tried = tune_tau(model, image, config, args.target_ssim, exact=heat, taus=TAUS)
        approx = OcclusionExplainer(model, shape, replace(config, mode="approx", tau=tau))
        approx.explain(image, heat.target)  # warm-up, untimed
        approx_runs = [approx.explain(image, heat.target) for _ in range(args.repeats)]
        ours = statistics.median(r.seconds for r in approx_runs)
        score = ssim(approx_runs[0].probs, heat.probs)
        results.append({**common, "mode": "approx", "ours_s": ours, "speedup": full_s / ours, "ssim": score,
                        "theoretical_speedup": approx_runs[0].theoretical_speedup, "positions": approx_runs[0].positions,
                        "tau": tau, "tau_tried": tried, "target_ssim": args.target_ssim,
                        "coarse_stride": args.coarse_stride, "top_share": args.top_share})
    for row in results:
        print(f"{row['model']:18s} {row['mode']:6s} full {row['full_s']:8.1f} s  ours {row['ours_s']:7.1f} s  "
              f"speedup {row['speedup']:5.2f}x (theory {row['theoretical_speedup']:5.2f}x)  ssim {row['ssim']:.3f}  "
              f"tau {row['tau']:g}", file=sys.stderr, flush=True)
    print(json.dumps({"results": results}))
    return 0
