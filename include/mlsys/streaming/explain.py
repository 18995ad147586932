"""The explain stage: an occlusion heatmap of one image (Krypton's OBE workload), logged to MLflow.

    mlsys explain --image cat.jpg                           # exact, patch 16, stride 4, EfficientNet-Lite0
    mlsys explain --image cat.jpg --mode approx             # tau tuned to SSIM 0.9, adaptive drill-down
    mlsys explain --image cat.jpg --patch 16 --stride 4 --out heatmaps/   # the PNG also written there

    image ─resize─► size x size ─► OcclusionExplainer (incremental from the unoccluded image) ─► heatmap
        ─► MLflow run: params, metrics (seconds, positions, theoretical speedup, SSIM), occlusion_heatmap.png,
           heatmap.json (the probabilities by grid position)

Approximate mode with ``tau=0`` tunes tau first (``occlusion.tune_tau``):
the exact and approximate heatmaps on a grid of twice the stride, the
smallest tau whose SSIM reaches ``target_ssim``; then the heatmap at the
stride asked for with that tau.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlsys.spec import check_knobs, knob, require
from mlsys.streaming import networks
from mlsys.streaming.incremental.config import MODES


@dataclass(frozen=True)
class ExplainSpec:
    image: str = knob("", "The image file to explain (PNG, JPEG, ...).")
    model: str = knob(networks.TRAINED, "efficientnet-lite0 (ImageNet-trained) or a zoo CNN (seeded weights).",
                      enum=list(networks.MODELS))
    weights: str = knob("", "efficientnet-lite0 only: a state dict file of your own (default: the installed one).")
    width: float = knob(1.0, "Channel-width multiplier of the zoo's CNNs.", exclusiveMinimum=0)
    seed: int = 0
    size: int = knob(224, "The image is resized to size x size pixels.", minimum=16)
    patch: int = knob(16, "Side of the occluding gray square, pixels.", minimum=1)
    stride: int = knob(4, "Step of the occlusion grid, pixels.", minimum=1)
    mode: str = knob("exact", "exact: every value equals full inference; approx: tau and adaptive drill-down.",
                     enum=list(MODES))
    tau: float = knob(0.0, "approx: projective-field threshold in (0, 1]; 0: tuned to target_ssim.", minimum=0,
                      maximum=1)
    target_ssim: float = knob(0.9, "approx: the SSIM against the exact heatmap that tau is tuned to.",
                              exclusiveMinimum=0, maximum=1)
    coarse_stride: int = knob(16, "approx: stride of the coarse pass (adaptive drill-down).", minimum=1)
    top_share: float = knob(0.25, "approx: share of the grid drilled down at the fine stride.", exclusiveMinimum=0,
                            maximum=1)
    batch: int = knob(16, "Occluded copies propagated together.", minimum=1)
    target_class: int = knob(-1, "Class to explain (-1: the predicted one).", minimum=-1)
    out: str = ""  # a folder to write the heatmap PNG to as well

    def __post_init__(self):
        require(bool(self.image), "ExplainSpec", "image", self.image, "give an image file, e.g. --image cat.jpg")
        check_knobs(self)
        require(self.patch <= self.size, "ExplainSpec", "patch", self.patch, f"use a patch of at most size={self.size}")
        require(not self.weights or self.model == networks.TRAINED, "ExplainSpec", "weights", self.weights,
                f"weights apply to model={networks.TRAINED!r} only: leave weights empty for {self.model!r}")
        require(self.mode == "approx" or self.tau == 0.0, "ExplainSpec", "tau", self.tau,
                "tau applies to mode='approx' only: leave it 0 in exact mode")


@dataclass(frozen=True)
class ExplainResult:
    image: str
    target: int
    target_name: str
    probability: float
    mode: str
    tau: float
    heatmap: dict[str, Any]  # ys, xs, probs (the grid)
    png: str  # the written PNG ("" without --out)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("heatmap")
        return out


def load_image(path: str, size: int):
    """An image file as a (3, size, size) float tensor in [0, 1]."""
    import numpy as np
    import torch
    from PIL import Image

    from mlsys.errors import DataError

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path!r}: {exc}; give a PNG or JPEG file") from exc
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


def render(image, heatmap, title: str) -> bytes:
    """A PNG: the image with the importance overlaid, and the heatmap of p(target) with its colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    size, p = image.shape[1], heatmap.ys[1] - heatmap.ys[0] if len(heatmap.ys) > 1 else 1
    importance = F.interpolate(heatmap.importance[None, None].float(), size=(size, size), mode="bilinear",
                               align_corners=False)[0, 0].clamp(min=0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4.2))
    a.imshow(image.permute(1, 2, 0).numpy())
    a.imshow(importance.numpy(), cmap="jet", alpha=0.45)
    a.set_title("drop in p(target) when occluded")
    a.axis("off")
    shown = b.imshow(heatmap.probs.numpy(), cmap="viridis", extent=(0, len(heatmap.xs) * p, len(heatmap.ys) * p, 0))
    b.set_title("p(target), patch at each position")
    fig.colorbar(shown, ax=b, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def run(spec: ExplainSpec) -> ExplainResult:
    import mlflow

    from mlsys.streaming.incremental.occlusion import OcclusionConfig, OcclusionExplainer, tune_tau

    image = load_image(spec.image, spec.size)
    model = networks.build(spec.model, spec.size, spec.width, spec.seed, spec.weights)
    names = networks.class_names(spec.model)
    config = OcclusionConfig(patch=spec.patch, stride=spec.stride, mode=spec.mode, coarse_stride=spec.coarse_stride,
                             top_share=spec.top_share, batch=spec.batch)
    target = None if spec.target_class < 0 else spec.target_class
    metrics: dict[str, float] = {}
    tau = spec.tau or 1.0
    if spec.mode == "approx" and not spec.tau:
        tuning = replace(config, stride=2 * spec.stride)
        tau, tried = tune_tau(model, image, tuning, spec.target_ssim)
        metrics["tuning_ssim"] = max((s for t, s in tried if t == tau), default=0.0)
    heatmap = OcclusionExplainer(model, tuple(image.shape), replace(config, tau=tau)).explain(image, target)
    name = names[heatmap.target] if names else f"class {heatmap.target}"
    metrics.update(seconds=heatmap.seconds, positions=float(heatmap.positions), grid=float(heatmap.probs.numel()),
                   theoretical_speedup=heatmap.theoretical_speedup, probability=heatmap.base_prob, tau=tau)
    title = f"{spec.model}: {name} (p={heatmap.base_prob:.2f}), {spec.mode}" + (f", tau={tau:g}" if spec.mode ==
                                                                                  "approx" else "")
    png = render(image, heatmap, title)
    written = ""
    if spec.out:
        Path(spec.out).mkdir(parents=True, exist_ok=True)
        written = str(Path(spec.out) / f"{Path(spec.image).stem}_{spec.mode}_heatmap.png")
        Path(written).write_bytes(png)
    grid = {"ys": heatmap.ys, "xs": heatmap.xs, "probs": [[round(float(v), 6) for v in row] for row in heatmap.probs]}
    if mlflow.active_run() is not None:
        mlflow.log_params({k: v for k, v in dataclasses.asdict(spec).items() if k != "out"})
        mlflow.log_metrics(metrics)
        mlflow.log_image(_png_image(png), "occlusion_heatmap.png")
        mlflow.log_dict({**grid, "target": heatmap.target, "target_name": name}, "heatmap.json")
        mlflow.set_tag("mlsys.explain.class", name)
    return ExplainResult(spec.image, heatmap.target, name, heatmap.base_prob, spec.mode, tau, grid, written, metrics)


def _png_image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per spec field; a flag not given keeps the spec's default."""
    parser.description = __doc__.split("\n\n")[0]
    hints = typing.get_type_hints(ExplainSpec)
    for f in dataclasses.fields(ExplainSpec):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=hints[f.name], default=None,
                            help=f"{f.metadata.get('help', '')} (default: {f.default!r})".lstrip())


def main(args: argparse.Namespace) -> int:
    """``mlsys explain``: build the spec (errors before any MLflow run opens), run it in a tracked run, print JSON."""
    from mlsys.errors import MlsysError
    from mlsys.spec import from_params
    from mlsys.tracking import RunContext, stage_run

    try:
        spec = from_params(ExplainSpec, vars(args))
        with stage_run(RunContext.cli("explain")):
            result = run(spec)
    except MlsysError as exc:
        print(f"mlsys explain: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), indent=2, default=str))
    return 0
