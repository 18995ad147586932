"""The incremental inference engine: Krypton's incremental view maintenance for a stream of frames.

Per position (``regions="pixels"``, the default)::

    frame t ──detect vs base input──► changed pixels (mask) ──► per layer (graph order):
        window layer   mask ─dilate─► positions ─gather windows from the view─► one GEMM / reduce ─► rows
        pointwise      same positions, op on the rows
        residual add   union of both inputs' masks, rows of both views added
        global / head  whole map (the view) ─► recomputed in full
        every recomputed row is written into its layer's view at once: the frame becomes the base

Scattered changes cost what they touch: a kernel call per layer, not per box,
so the FLOPs spent are the FLOPs the changed pixels need. A frame with no
changed pixel costs nothing: the last output stands.

With boxes (``regions="boxes"``, Krypton's patches; needed for multi-frame
batches and occlusion), see ``boxes.py``. With ``batch_frames=1`` every frame
is diffed against the frame before it, which gives the smallest regions.

Full inference (a base frame, ``full``) runs the fused graph channels-last:
oneDNN's fastest layout here, and each layer's output is then already the
(H*W, C) row buffer its view needs (no copy on a refresh).

Exact mode: each output equals full inference on the frame the engine saw
(the base input with the detected pixels or boxes replaced by the new frame's).
Approximate mode: regions stop growing past ``tau`` of a map (only their
core is recomputed), and a new base frame (full inference) comes every
``refresh_every`` frames; the error is for the caller to measure against full
inference, never assumed.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import fx, nn

from mlsys.streaming.incremental.boxes import commit, plan_boxes, propagate_boxes
from mlsys.streaming.incremental.config import EngineConfig, threads
from mlsys.streaming.incremental.graph import Step, plan_graph
from mlsys.streaming.incremental.propagation import PointwiseRule, WindowRule
from mlsys.streaming.incremental.region import Box, detect_changes, detect_pixels
from mlsys.streaming.incremental.views import Views

GATHER_TABLE_MAX = 1 << 22  # entries (32 MB) of a layer's gather table; larger maps compute their rows per frame
TAPS_MIN = 1 << 16  # N x C from which a depthwise conv runs tap by tap (below: one gather, smaller fixed cost)


class FrameSizeError(ValueError):
    """A frame whose shape is not the one the engine was built for."""


@dataclass(frozen=True)
class FrameStat:
    """What the engine did for one frame."""

    refreshed: bool  # full inference on a new base frame
    changed_share: float  # share of pixels over the threshold
    box_share: float  # share of the frame covered by the detected boxes
    boxes: int  # rectangles detected (regions="boxes"; 0 per position)
    flops: float  # FLOPs spent on this frame
    latency_s: float  # wall time (a micro-batch's time is split evenly over its frames)
    min_flops: float = 0.0  # FLOPs the detected regions need, before boxes merge to save kernel calls


class IncrementalEngine:
    """Streams frames (3, H, W) through ``model`` incrementally; see the module doc."""

    def __init__(self, model: nn.Module, frame_shape: tuple[int, int, int], config: EngineConfig | None = None):
        self.config = config or EngineConfig()
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.model = model.eval()
        graph = plan_graph(self.model, self.frame_shape, self.config.on_unsupported)
        self.gm, self.steps, self.fallbacks, self.viewer = graph.gm, graph.steps, graph.fallbacks, graph.viewer
        self.input_name, self.output_name = graph.input_name, graph.output_name
        self.step_of = {s.node.name: s for s in self.steps}
        if self.config.regions == "pixels":
            for step in self.steps:
                if not (step.spatial and isinstance(step.rule, WindowRule)) or step.rule.identity:
                    continue
                (ho, wo), (kh, kw) = step.out_hw, step.rule.kernel
                if ho * wo * kh * kw <= GATHER_TABLE_MAX:
                    in_hw = self.step_of[step.inputs[0]].out_hw
                    index = step.rule.gather_index(torch.arange(ho * wo), wo, in_hw)
                    pad = index == in_hw[0] * in_hw[1]  # windows that read padding
                    step.gather, step.pad = index.masked_fill(pad, 0), pad if bool(pad.any()) else None
        self.full_flops = sum(s.full_flops for s in self.steps)
        self.head_flops = sum(s.full_flops for s in self.steps if not s.spatial)
        self.views: Views | None = None
        self.last_output: torch.Tensor | None = None  # of the last frame: a frame with no change gets it again
        self.since_refresh = 0
        self.threads = torch.get_num_threads()  # for full inference and large patches; small ones use one

    # -- execution ------------------------------------------------------------
    def _call(self, node: fx.Node, env: dict[str, Any]) -> Any:
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: env[n.name])
        if node.op == "get_attr":
            obj: Any = self.gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            return obj
        if node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            if getattr(m, "inplace", False):  # views are kept: nothing may be overwritten in place
                args = (args[0].clone(), *args[1:])
            return m(*args, **kwargs)
        if node.op == "call_function":
            fn = operator.add if node.target is operator.iadd else node.target
            if kwargs.get("inplace"):
                kwargs = {**kwargs, "inplace": False}
            return fn(*args, **kwargs)
        if node.target.endswith("_"):
            args = (args[0].clone(), *args[1:])
        return getattr(args[0], node.target)(*args[1:], **kwargs)

    def threads_for(self, flops: float) -> int:
        """Threads for an op of ``flops`` (``parallel_flops``: small ops run on one)."""
        return self.threads if flops >= self.config.parallel_flops else 1

    def _check(self, frame: torch.Tensor) -> None:
        if tuple(frame.shape) != self.frame_shape:
            _, h, w = self.frame_shape
            raise FrameSizeError(
                f"frame of shape {tuple(frame.shape)} does not fit this engine, built for {self.frame_shape} "
                f"(channels, height, width): resize frames to {w}x{h} (width x height) before streaming them")

    @torch.no_grad()
    def full(self, frames: torch.Tensor) -> torch.Tensor:
        """Full inference on a frame (3, H, W) or a batch (N, 3, H, W) -> (N, ...), through the same fused,
        channels-last graph the engine runs: the baseline it is measured against."""
        batch = frames[None] if frames.dim() == 3 else frames
        with threads(self.threads):
            return self.gm(batch.contiguous(memory_format=torch.channels_last))

    @torch.no_grad()
    def materialise(self, frame: torch.Tensor) -> torch.Tensor:
        """Full inference on ``frame``, kept as the new base views; returns the output (1, ...)."""
        self._check(frame)
        with threads(self.threads):
            return self._materialise(frame)

    def _materialise(self, frame: torch.Tensor) -> torch.Tensor:
        x = frame[None].clone(memory_format=torch.channels_last)  # a copy: the caller's frame is never written
        viewed = [s.node.name for s in self.steps if s.needs_view]
        if self.viewer is not None:
            out, *maps = self.viewer(x)
            values = dict(zip(viewed, maps))
            values[self.input_name] = x
        else:
            values = {}
            for step in self.steps:
                name = step.node.name
                values[name] = x if step.node.op == "placeholder" else self._call(step.node, values)
            out = values[self.output_name]
        kept: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for name in viewed:
            value = values[name]
            if value.data_ptr() in seen:  # an identity layer: its view must not alias another
                value = value.clone()
            seen.add(value.data_ptr())
            kept[name] = value
        if self.config.regions == "pixels":
            self.views = Views.by_rows(kept, {s.node.name for s in self.steps if s.spatial and s.needs_view})
        else:
            self.views = Views(kept)
        self.since_refresh = 0
        self.last_output = out
        return out.clone()

    def plan_pixels(self, changed: torch.Tensor, budget: float = float("inf")
                    ) -> tuple[dict[str, torch.Tensor], float, float]:
        """The positions every spatial layer recomputes for a frame whose input changed in ``changed`` (H, W),
        as flat indices into its map; their FLOPs; and their cost, FLOPs weighted by what a recomputed position
        costs against full inference (``WindowRule.weight``). Mask arithmetic only: run before any tensor work,
        to decide whether full inference is cheaper; it stops once the cost passes ``budget``. Nothing changed:
        no positions, no FLOPs (the last output stands)."""
        if not bool(changed.any()):
            return {}, 0.0, 0.0
        tau = self.config.effective_tau
        masks: dict[str, torch.Tensor] = {}
        positions: dict[str, torch.Tensor] = {}
        flops = cost = self.head_flops
        for step in self.steps:
            if not step.spatial:
                continue
            name, rule, src = step.node.name, step.rule, step.inputs[:1] and step.inputs[0]
            if isinstance(rule, PointwiseRule) or (isinstance(rule, WindowRule) and rule.identity):
                masks[name], positions[name] = masks[src], positions[src]  # the same positions as its input
            else:
                if step.node.op == "placeholder":
                    mask = changed
                elif isinstance(rule, WindowRule):
                    mask = rule.out_mask(masks[src], step.out_hw, tau)
                else:
                    mask = masks[src] | masks[step.inputs[1]]
                masks[name], positions[name] = mask, mask.flatten().nonzero().squeeze(1)
            if rule is not None:
                step_flops = rule.cost * len(positions[name])
                flops, cost = flops + step_flops, cost + step_flops * getattr(rule, "weight", 1.0)
                if cost > budget:
                    return {}, flops, cost
        return positions, flops, cost

    def _index(self, step: Step, pos: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The input rows (N, kh*kw) the output positions ``pos`` of a window layer read, and which are padding."""
        if step.gather is not None:
            return step.gather.index_select(0, pos), (step.pad.index_select(0, pos) if step.pad is not None else None)
        index = step.rule.gather_index(pos, step.out_hw[1], self.step_of[step.inputs[0]].out_hw)
        pad = index == n_rows
        return index.masked_fill(pad, 0), pad

    def _window_rows(self, step: Step, pos: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """A window layer's new rows (N, C_out) at ``pos``, read from its input view's rows ``src``."""
        rule = step.rule
        if rule.identity:  # 1x1, stride 1: the window is the position itself
            return rule.rows(src.index_select(0, pos)[:, None])
        index, pad = self._index(step, pos, len(src))
        if rule.taps is not None and len(pos) * src.shape[1] >= TAPS_MIN:
            return rule.taps(src, index, pad)
        windows = src.index_select(0, index.flatten()).view(*index.shape, src.shape[1])  # (N, kh*kw, C)
        if pad is not None and len(border := pad.any(1).nonzero().squeeze(1)):  # only the windows at the border
            windows[border] = windows[border].masked_fill_(pad[border][..., None], rule.pad_value)
        return rule.rows(windows)

    @torch.no_grad()
    def _propagate_pixels(self, frame: torch.Tensor, positions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Recompute every layer at its positions, writing each into its view; returns the output (1, ...)."""
        assert self.views is not None
        views, rows = self.views, self.views.rows
        values: dict[str, torch.Tensor] = {}  # this frame's new rows (N, C) of each spatial layer
        full_env: dict[str, Any] = {}
        for step in self.steps:
            name, rule = step.node.name, step.rule
            if not step.spatial:
                env = {src: views.tensors[src] if self.step_of[src].spatial else full_env[src] for src in step.inputs}
                full_env[name] = self._call(step.node, env)
                continue
            pos = positions[name]
            if not len(pos):
                values[name] = torch.empty(0, step.node.meta["tensor_meta"].shape[1])
                continue
            if step.node.op == "placeholder":
                vals = frame.permute(1, 2, 0).reshape(-1, frame.shape[0])[pos]
            elif isinstance(rule, PointwiseRule):
                src = step.inputs[0]
                if rule.apply_ is not None and len(self.step_of[src].consumers) == 1:
                    vals = rule.apply_(values[src])  # its view, if any, was written already
                else:
                    vals = rule.apply(values[src][:, :, None, None])[:, :, 0, 0]
            elif isinstance(rule, WindowRule):
                vals = self._window_rows(step, pos, rows[step.inputs[0]])
            else:
                vals = rows[step.inputs[0]][pos] + rows[step.inputs[1]][pos]
            values[name] = vals
            if step.needs_view:
                rows[name].index_copy_(0, pos, vals)
        out = self.output_name
        self.last_output = views.tensors[out] if self.step_of[out].spatial else full_env[out]
        return self.last_output.clone()

    @torch.no_grad()
    def process(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[FrameStat]]:
        """Stream frames (N, 3, H, W) in [0, 1] through the engine, in order; state carries over calls.

        Returns the outputs (N, ...) and one FrameStat per frame. A frame gets
        full inference (and becomes the new base) when it is the first, when
        its boxes cover more than ``refresh_share``, when propagating it would
        cost more than ``max_cost`` of full inference, or (approx) every
        ``refresh_every`` frames.
        """
        with threads(1):
            return self._process(frames)

    def _process(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[FrameStat]]:
        cfg = self.config
        outputs: list[torch.Tensor | None] = [None] * len(frames)
        stats: list[FrameStat | None] = [None] * len(frames)
        pending: list[tuple[int, dict[str, list[Box]], FrameStat]] = []  # boxes: frames waiting for their batch
        area = self.frame_shape[1] * self.frame_shape[2]

        def flush() -> None:
            if not pending:
                return
            t0 = time.perf_counter()
            out, deltas = propagate_boxes(self, [frames[i] for i, _, _ in pending], [p for _, p, _ in pending])
            commit(self, deltas, len(pending) - 1)
            per = (time.perf_counter() - t0) / len(pending)
            for k, (i, _, stat) in enumerate(pending):
                outputs[i] = out[k:k + 1]
                stats[i] = replace(stat, latency_s=stat.latency_s + per)
            pending.clear()

        for i, frame in enumerate(frames):
            self._check(frame)
            t0 = time.perf_counter()
            if self.views is not None:
                base = self.views.tensors[self.input_name][0]
                if cfg.regions == "pixels":
                    mask, share = detect_pixels(frame, base, cfg.threshold, cfg.tile, cfg.min_pixels)
                    positions, flops, cost = self.plan_pixels(mask, cfg.max_cost * self.full_flops)
                    stat = FrameStat(False, share, float(mask.float().mean()), 0, flops, 0.0, flops)
                else:
                    boxes, share = detect_changes(frame, base, cfg.threshold, cfg.tile, cfg.min_pixels)
                    regions, flops = plan_boxes(self, boxes)
                    cost = flops
                    needed = plan_boxes(self, boxes, False)[1] if cfg.call_flops or cfg.flops_per_weight_byte else flops
                    stat = FrameStat(False, share, sum(b.area for b in boxes) / area, len(boxes), flops, 0.0, needed)
                due = cfg.mode == "approx" and cfg.refresh_every and self.since_refresh + 1 >= cfg.refresh_every
                if not (due or stat.box_share > cfg.refresh_share or cost > cfg.max_cost * self.full_flops):
                    self.since_refresh += 1
                    if cfg.regions == "pixels":
                        if not flops:  # no pixel changed: nothing to recompute
                            outputs[i] = self.last_output.clone()
                        else:
                            with threads(self.threads):
                                outputs[i] = self._propagate_pixels(frame, positions)
                        stats[i] = replace(stat, latency_s=time.perf_counter() - t0)
                        continue
                    pending.append((i, regions, replace(stat, latency_s=time.perf_counter() - t0)))
                    if len(pending) >= cfg.batch_frames:
                        flush()
                    continue
                flush()
                t0 = time.perf_counter()
            else:
                stat = FrameStat(True, 1.0, 1.0, 1, 0.0, 0.0)
            outputs[i] = self.materialise(frame)  # the first frame, or a refresh: a new base frame
            stats[i] = replace(stat, refreshed=True, flops=self.full_flops, min_flops=self.full_flops,
                               latency_s=time.perf_counter() - t0)
        flush()
        return torch.cat(outputs), stats  # type: ignore[arg-type]
