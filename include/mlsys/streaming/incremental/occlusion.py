"""Occlusion-based explanation (OBE), Krypton's headline workload: which parts of an image a prediction rests on.

    image ─full inference─► base views, predicted class c, its probability p0
    for each position (y, x) of a grid of stride S:   copy of the image with a gray patch x patch square at (y, x)
        heatmap[y, x] = p(c | occluded copy)           importance = p0 - heatmap

Each occluded copy is an incremental re-inference from the unoccluded base
views (nothing committed): the patch grows by each layer's window (its
projective field) and the rest of every map is the base's. ``batch`` copies
propagate together, their patches widened to one size so that each layer is
one call for all of them (Krypton's batching); the plans of all positions are
computed at once, layer by layer, as integer tensors::

    plan     boxes of all P positions (P, 4: y0 y1 x0 x1) ─out_box, vectorised─► (P, 4) per layer ─► FLOPs (P,)
    batch    per layer: B windows ─gather base rows, copy in each copy's patch─► (B, C, h, w) ─op─► B patches

Exact mode: every value equals full inference of its occluded copy.
Approximate mode (Krypton):
    projective-field threshold tau  a patch stops growing past tau of a map's side; its core is kept
    adaptive drill-down             a coarse pass at stride S1 over the image, then stride S2 (``stride``) only
                                    over the top ``top_share`` of the fine grid by the coarse pass's drop
                                    (interpolated); the rest keeps the interpolated coarse values
    ``tune_tau``                    the smallest tau whose heatmap reaches a target SSIM against the exact one
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

from mlsys.spec import require
from mlsys.streaming.incremental.config import MODES, EngineConfig, threads
from mlsys.streaming.incremental.engine import IncrementalEngine
from mlsys.streaming.incremental.propagation import PointwiseRule, WindowRule
from mlsys.streaming.incremental.quality import ssim

TAUS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)  # tried by tune_tau, smallest (fastest) first


@dataclass(frozen=True)
class OcclusionConfig:
    """What is occluded, where, and how the heatmap is computed."""

    patch: int = 16  # occluding square's side, pixels
    stride: int = 4  # grid step, pixels (S2 in approximate mode)
    fill: float = 0.5  # the patch's value in [0, 1] (gray)
    mode: str = "exact"  # exact: every value = full inference of its copy; approx: tau + adaptive drill-down
    tau: float = 1.0  # approx: projective-field threshold, share of a map's side (1: patches grow freely)
    coarse_stride: int = 16  # approx: the coarse pass's stride S1 (<= stride: no drill-down)
    top_share: float = 0.25  # approx: share r of the fine grid drilled down at the fine stride
    batch: int = 16  # occluded copies propagated together

    def __post_init__(self) -> None:
        require(self.patch >= 1, "OcclusionConfig", "patch", self.patch, "use a patch side of at least 1 pixel, e.g. 16")
        require(self.stride >= 1, "OcclusionConfig", "stride", self.stride, "use a stride of at least 1 pixel, e.g. 4")
        require(0 <= self.fill <= 1, "OcclusionConfig", "fill", self.fill, "use a pixel value in [0, 1], e.g. 0.5 (gray)")
        require(self.mode in MODES, "OcclusionConfig", "mode", self.mode, f"use one of {MODES}")
        require(0 < self.tau <= 1, "OcclusionConfig", "tau", self.tau, "use a share in (0, 1]; 1 means no threshold")
        require(self.coarse_stride >= 1, "OcclusionConfig", "coarse_stride", self.coarse_stride,
                "use a stride of at least 1 pixel, e.g. 16 (4x the fine stride)")
        require(0 < self.top_share <= 1, "OcclusionConfig", "top_share", self.top_share, "use a share in (0, 1], e.g. 0.25")
        require(self.batch >= 1, "OcclusionConfig", "batch", self.batch, "use at least 1 copy per batch, e.g. 16")
        require(self.mode == "approx" or self.tau == 1.0, "OcclusionConfig", "tau", self.tau,
                "tau applies to mode='approx' only: use tau=1.0 with mode='exact'")


@dataclass(frozen=True)
class Heatmap:
    """The target class's probability with the patch at each grid position (top-left corners ``ys`` x ``xs``)."""

    probs: torch.Tensor  # (len(ys), len(xs))
    ys: list[int]
    xs: list[int]
    target: int
    base_prob: float  # of the unoccluded image
    base_logits: torch.Tensor  # (classes,) of the unoccluded image
    positions: int  # occluded copies run (drill-down runs fewer than the grid has)
    flops: float  # FLOPs the engine spent on them
    full_flops: float  # of one full inference
    seconds: float

    @property
    def importance(self) -> torch.Tensor:
        """How much occluding each position lowers the target's probability (positive: the evidence)."""
        return self.base_prob - self.probs

    @property
    def theoretical_speedup(self) -> float:
        """FLOPs of full inference at every grid position / FLOPs spent."""
        return self.full_flops * self.probs.numel() / max(self.flops, 1.0)


def grid(size: int, patch: int, stride: int) -> list[int]:
    """Top-left corners along one axis of a ``size``-pixel image: every ``stride``, the patch inside the image."""
    return list(range(0, max(size - patch, 0) + 1, stride))


def _axis(a: torch.Tensor, b: torch.Tensor, n_out: int, k: int, s: int, p: int, d: int, tau: float):
    """``propagation._axis`` for P intervals [a, b) at once: the outputs they reach, cut past tau to their core."""
    ext = (k - 1) * d
    lo = (-torch.div(-(a + p - ext), s, rounding_mode="floor")).clamp(min=0)
    hi = (torch.div(b - 1 + p, s, rounding_mode="floor") + 1).clamp(max=n_out)
    if tau < 1.0:
        c = ext / 2
        clo = torch.minimum(torch.maximum(lo, torch.ceil((a + p - c) / s).long()), hi - 1)
        chi = torch.maximum(torch.minimum(hi, torch.floor((b - 1 + p - c) / s).long() + 1), clo + 1)
        allowed = torch.clamp(chi - clo, min=math.ceil(tau * n_out))
        cut = (hi - lo - allowed).clamp(min=0)
        lo, hi = torch.minimum(lo + cut // 2, clo), torch.maximum(hi - (cut - cut // 2), chi)
    return lo, torch.maximum(hi, lo)  # lo == hi: the patch reaches no output here


class OcclusionExplainer:
    """Heatmaps of one model for images of one shape (3, H, W) in [0, 1]; see the module doc."""

    def __init__(self, model: torch.nn.Module, image_shape: tuple[int, int, int], config: OcclusionConfig | None = None):
        self.config = config or OcclusionConfig()
        c = self.config
        engine_mode = "approx" if c.mode == "approx" and c.tau < 1 else "exact"
        self.engine = IncrementalEngine(model, image_shape, EngineConfig(
            mode=engine_mode, regions="boxes", tau=c.tau, max_cost=float("inf"), refresh_share=1.0))
        self.fill = torch.full(tuple(image_shape), c.fill)  # every copy's patch reads its box from here

    def plans(self, ys: torch.Tensor, xs: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Every spatial layer's box (P, 4) for patches at corners (ys, xs) (P,), and each position's FLOPs (P,)."""
        e, p, tau = self.engine, self.config.patch, self.engine.config.effective_tau
        h, w = e.frame_shape[1:]
        boxes: dict[str, torch.Tensor] = {}
        flops = torch.full((len(ys),), float(e.head_flops), dtype=torch.float64)
        for step in e.steps:
            if not step.spatial:
                continue
            name, rule = step.node.name, step.rule
            if step.node.op == "placeholder":
                out = torch.stack([ys, (ys + p).clamp(max=h), xs, (xs + p).clamp(max=w)], 1)
            elif isinstance(rule, PointwiseRule):
                out = boxes[step.inputs[0]]
            elif isinstance(rule, WindowRule):
                src = boxes[step.inputs[0]]
                (ho, wo), (ky, kx), (sy, sx), (py, px), (dy, dx) = (step.out_hw, rule.kernel, rule.stride,
                                                                    rule.padding, rule.dilation)
                out = torch.stack([*_axis(src[:, 0], src[:, 1], ho, ky, sy, py, dy, tau),
                                   *_axis(src[:, 2], src[:, 3], wo, kx, sx, px, dx, tau)], 1)
            else:  # residual add: the hull of both (outputs in it that neither changed add base values: exact)
                a, b = boxes[step.inputs[0]], boxes[step.inputs[1]]
                out = torch.stack([torch.minimum(a[:, 0], b[:, 0]), torch.maximum(a[:, 1], b[:, 1]),
                                   torch.minimum(a[:, 2], b[:, 2]), torch.maximum(a[:, 3], b[:, 3])], 1)
            boxes[name] = out
            if rule is not None:
                flops += rule.cost * ((out[:, 1] - out[:, 0]) * (out[:, 3] - out[:, 2])).double()
        return boxes, flops

    @torch.no_grad()
    def logits(self, ys: list[int], xs: list[int]) -> tuple[torch.Tensor, float]:
        """The logits (P, classes) with the patch at each corner (ys[i], xs[i]), from the base views; the FLOPs."""
        boxes, flops = self.plans(torch.tensor(ys, dtype=torch.long), torch.tensor(xs, dtype=torch.long))
        out = []
        with threads(self.engine.threads):
            for start in range(0, len(ys), self.config.batch):
                out.append(self._run({name: b[start:start + self.config.batch] for name, b in boxes.items()}))
        return torch.cat(out), float(flops.sum())

    def probabilities(self, ys: list[int], xs: list[int], target: int) -> tuple[torch.Tensor, float]:
        """p(target) with the patch at each corner (ys[i], xs[i]), from the base views; and the FLOPs spent."""
        logits, flops = self.logits(ys, xs)
        return logits.float().softmax(-1)[:, target], flops

    @torch.no_grad()
    def occluded(self, image: torch.Tensor, ys: list[int], xs: list[int]) -> torch.Tensor:
        """The occluded copies themselves (P, 3, H, W): what full inference (the baseline) runs on."""
        p, copies = self.config.patch, image.expand(len(ys), -1, -1, -1).clone()
        for i, (y, x) in enumerate(zip(ys, xs)):
            copies[i, :, y:y + p, x:x + p] = self.config.fill
        return copies

    def _run(self, boxes: dict[str, torch.Tensor]) -> torch.Tensor:
        """The logits (B, classes) of B occluded copies, each layer's patch at its copy's box (B, 4).

        Every copy's box of a layer is widened to the batch's largest (kept inside the map; the extra
        outputs are computed from their windows, so still exact): one op per layer runs all B copies.
        """
        e = self.engine
        views = e.views.tensors
        patches: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (boxes (B, 4), values (B, C, h, w))
        full_env: dict[str, torch.Tensor] = {}
        for step in e.steps:
            name, rule = step.node.name, step.rule
            if not step.spatial:
                env = {src: _overlay(views[src], *patches[src]) if src in patches else full_env[src]
                       for src in step.inputs}
                full_env[name] = e._call(step.node, env)
                continue
            box = _widen(boxes[name], *step.out_hw)
            h, w = int(box[0, 1] - box[0, 0]), int(box[0, 3] - box[0, 2])
            if step.node.op == "placeholder":
                values = self.fill[:, :h, :w].expand(len(box), -1, -1, -1)
            elif isinstance(rule, PointwiseRule):
                box, values = patches[step.inputs[0]][0], rule.apply(patches[step.inputs[0]][1])
            elif isinstance(rule, WindowRule):
                (sy, sx), (py, px) = rule.stride, rule.padding
                ey, ex = (rule.kernel[0] - 1) * rule.dilation[0], (rule.kernel[1] - 1) * rule.dilation[1]
                window = torch.stack([box[:, 0] * sy - py, (box[:, 1] - 1) * sy - py + ey + 1,
                                      box[:, 2] * sx - px, (box[:, 3] - 1) * sx - px + ex + 1], 1)
                values = rule.apply(_read(views[step.inputs[0]], *patches[step.inputs[0]], window, rule.pad_value))
            else:
                values = sum(_read(views[src], *patches[src], box, 0.0) for src in step.inputs)
            patches[name] = (box, values)
        out = e.output_name
        return _overlay(views[out], *patches[out]) if out in patches else full_env[out]

    @torch.no_grad()
    def explain(self, image: torch.Tensor, target: int | None = None) -> Heatmap:
        """The heatmap of ``image`` (3, H, W) for class ``target`` (default: the predicted one)."""
        c, t0 = self.config, time.perf_counter()
        logits = self.engine.materialise(image)[0].float()
        target = int(logits.argmax()) if target is None else int(target)
        base_prob = float(logits.softmax(-1)[target])
        h, w = self.engine.frame_shape[1:]
        ys, xs = grid(h, c.patch, c.stride), grid(w, c.patch, c.stride)
        if c.mode == "exact" or c.coarse_stride <= c.stride:
            yy, xx = torch.meshgrid(torch.tensor(ys), torch.tensor(xs), indexing="ij")
            probs, flops = self.probabilities(yy.flatten().tolist(), xx.flatten().tolist(), target)
            probs, positions = probs.view(len(ys), len(xs)), len(ys) * len(xs)
        else:
            probs, flops, positions = self._drill_down(ys, xs, target, base_prob)
        return Heatmap(probs, ys, xs, target, base_prob, logits, positions, flops, self.engine.full_flops,
                       time.perf_counter() - t0)

    def _drill_down(self, ys: list[int], xs: list[int], target: int, base_prob: float):
        c = self.config
        h, w = self.engine.frame_shape[1:]
        cy, cx = grid(h, c.patch, c.coarse_stride), grid(w, c.patch, c.coarse_stride)
        yy, xx = torch.meshgrid(torch.tensor(cy), torch.tensor(cx), indexing="ij")
        coarse, flops = self.probabilities(yy.flatten().tolist(), xx.flatten().tolist(), target)
        fine = _interpolate(coarse.view(len(cy), len(cx)), torch.tensor(ys) / c.coarse_stride,
                            torch.tensor(xs) / c.coarse_stride)
        known = (torch.tensor(ys)[:, None] % c.coarse_stride == 0) & (torch.tensor(xs)[None] % c.coarse_stride == 0)
        drop = (base_prob - fine).masked_fill(known, -math.inf)  # coarse positions are known exactly already
        k = min(math.ceil(c.top_share * fine.numel()), int((~known).sum()))
        chosen = drop.flatten().topk(k).indices
        fy, fx = [ys[int(i) // len(xs)] for i in chosen], [xs[int(i) % len(xs)] for i in chosen]
        values, more = self.probabilities(fy, fx, target)
        fine.view(-1)[chosen] = values
        return fine, flops + more, len(cy) * len(cx) + k


def _widen(box: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Boxes (B, 4) widened to the largest one's size, moved back inside an (h, w) map where they would stick out."""
    size_y, size_x = int((box[:, 1] - box[:, 0]).max()), int((box[:, 3] - box[:, 2]).max())
    y0, x0 = box[:, 0].clamp(max=h - size_y), box[:, 2].clamp(max=w - size_x)
    return torch.stack([y0, y0 + size_y, x0, x0 + size_x], 1)


def _read(base: torch.Tensor, boxes: torch.Tensor, patch: torch.Tensor, window: torch.Tensor,
          pad_value: float) -> torch.Tensor:
    """Each copy's values in its ``window`` (B, 4) of a map, equal sizes, outside the map ``pad_value``: the base
    view (1, C, H, W) overlaid with the copy's patch (B, C, h, w) at ``boxes`` (B, 4). Channels last, as the maps
    are: one row gather from the base, one row copy of the patches; (B, C, wh, ww) in channels-last memory."""
    _, c, h, w = base.shape
    rows = base[0].permute(1, 2, 0).reshape(h * w, c)  # the view's own memory (channels last): no copy
    b, wh, ww = len(window), int(window[0, 1] - window[0, 0]), int(window[0, 3] - window[0, 2])
    ys = window[:, :1] + torch.arange(wh)  # (B, wh)
    xs = window[:, 2:3] + torch.arange(ww)  # (B, ww)
    out = rows.index_select(0, (ys.clamp(0, h - 1)[:, :, None] * w + xs.clamp(0, w - 1)[:, None, :]).flatten())
    outside = ((ys < 0) | (ys >= h))[:, :, None] | ((xs < 0) | (xs >= w))[:, None, :]  # (B, wh, ww)
    if bool(outside.any()):
        out.masked_fill_(outside.reshape(-1, 1), pad_value)
    ph, pw = patch.shape[2:]
    ry = boxes[:, :1] - window[:, :1] + torch.arange(ph)  # the patch's rows and columns in the window
    rx = boxes[:, 2:3] - window[:, 2:3] + torch.arange(pw)
    valid = (((ry >= 0) & (ry < wh))[:, :, None] & ((rx >= 0) & (rx < ww))[:, None, :]).flatten()  # (B*ph*pw,)
    dest = (torch.arange(b)[:, None, None] * (wh * ww) + ry[:, :, None] * ww + rx[:, None, :]).flatten()
    values = patch.permute(0, 2, 3, 1).reshape(b * ph * pw, c)
    if not bool(valid.all()):
        keep = valid.nonzero().squeeze(1)
        dest, values = dest[keep], values[keep]
    out.index_copy_(0, dest, values)
    return out.view(b, wh, ww, c).permute(0, 3, 1, 2)


def _overlay(base: torch.Tensor, boxes: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """Whole maps (B, C, H, W): the base view overlaid with each copy's patch (for the layers recomputed in full)."""
    _, _, h, w = base.shape
    whole = torch.tensor([[0, h, 0, w]]).expand(len(boxes), -1)
    return _read(base, boxes, patch, whole, 0.0)


def _interpolate(coarse: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``coarse`` (m, n) at fractional rows ``u`` (Y,) and columns ``v`` (X,): (Y, X)."""
    def axis(t: torch.Tensor, n: int):
        t = t.clamp(0, n - 1)
        i0 = t.floor().long().clamp(max=max(n - 2, 0))
        return i0, (i0 + 1).clamp(max=n - 1), (t - i0).clamp(0, 1)
    (i0, i1, fu), (j0, j1, fv) = axis(u, coarse.shape[0]), axis(v, coarse.shape[1])
    top = coarse[i0][:, j0] * (1 - fv) + coarse[i0][:, j1] * fv
    bottom = coarse[i1][:, j0] * (1 - fv) + coarse[i1][:, j1] * fv
    return top * (1 - fu)[:, None] + bottom * fu[:, None]


def tune_tau(model: torch.nn.Module, image: torch.Tensor, config: OcclusionConfig, target_ssim: float = 0.9,
             exact: Heatmap | None = None, taus: tuple[float, ...] = TAUS) -> tuple[float, list[tuple[float, float]]]:
    """The smallest tau (the fastest) whose approximate heatmap of ``image`` has SSIM >= ``target_ssim`` against the
    exact one (computed here unless given); returns it and every (tau, SSIM) tried. None reaches it: tau = 1."""
    shape = tuple(image.shape)
    if exact is None:
        exact = OcclusionExplainer(model, shape, replace(config, mode="exact", tau=1.0)).explain(image)
    tried = []
    for tau in sorted(taus):
        approx = OcclusionExplainer(model, shape, replace(config, mode="approx", tau=tau)).explain(image, exact.target)
        tried.append((tau, ssim(approx.probs, exact.probs)))
        if tried[-1][1] >= target_ssim:
            return tau, tried
    return 1.0, tried
