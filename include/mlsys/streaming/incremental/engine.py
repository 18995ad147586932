"""The incremental inference engine: Krypton's incremental view maintenance for a stream of frames.

Per position (``regions="pixels"``, the default)::

    frame t ──detect vs base input──► changed pixels (mask) ──► per layer (graph order):
        window layer   mask ─dilate─► positions ─gather windows from the view─► one GEMM / reduce ─► rows
        pointwise      same positions, op on the rows
        residual add   union of both inputs' masks, rows of both views added
        global / head  whole map (the view) ─► recomputed in full
        every recomputed row is written into its layer's view at once: the frame becomes the base

Scattered changes cost what they touch: a kernel call per layer, not per box,
so the FLOPs spent are the FLOPs the changed pixels need.

With boxes (``regions="boxes"``, Krypton's patches; needed for multi-frame batches)::

    frame t ──detect vs base input──► boxes ──► per layer (graph order):
        window layer   boxes ─out_box─► merged out boxes ─in_window─► read base+patches ─op─► patches
        pointwise      same boxes, op on the patches
        residual add   union of both inputs' boxes
        global / head  whole map (base + patches) ─► recomputed in full
    then the last frame of the micro-batch is committed: its patches are written into the base views.

Frames of one micro-batch (``batch_frames``) are all diffed against the same
base, so their patches of equal size run through each layer in one call
(Krypton's multi-query batching). With ``batch_frames=1`` every frame is
diffed against the frame before it, which gives the smallest regions.

Exact mode: each output equals full inference on the frame the engine saw
(the base input with the detected pixels or boxes replaced by the new frame's).
Approximate mode: regions stop growing past ``tau`` of a map (only their
core is recomputed), and a new base frame (full inference) comes every
``refresh_every`` frames; the error is for the caller to measure against full
inference, never assumed.
"""

from __future__ import annotations

import contextlib
import operator
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import fx, nn

from mlsys.streaming.incremental.config import EngineConfig
from mlsys.streaming.incremental.graph import plan_graph
from mlsys.streaming.incremental.propagation import PointwiseRule, WindowRule
from mlsys.streaming.incremental.region import Box, detect_changes, detect_pixels, merge_boxes
from mlsys.streaming.incremental.views import Delta, Views

GATHER_TABLE_MAX = 1 << 22  # entries (32 MB) of a layer's gather table; larger maps compute their rows per frame


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


@contextlib.contextmanager
def _threads(n: int):
    """Run with ``n`` intra-op threads. Patch ops are small: waking a thread pool for each costs more than
    it saves, and on a loaded machine a pool's barrier waits for a descheduled thread (100x slower)."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


class IncrementalEngine:
    """Streams frames (3, H, W) through ``model`` incrementally; see the module doc."""

    def __init__(self, model: nn.Module, frame_shape: tuple[int, int, int], config: EngineConfig | None = None):
        self.config = config or EngineConfig()
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.model = model.eval()
        graph = plan_graph(self.model, self.frame_shape, self.config.on_unsupported)
        self.gm, self.steps, self.fallbacks = graph.gm, graph.steps, graph.fallbacks
        self.input_name, self.output_name = graph.input_name, graph.output_name
        self.step_of = {s.node.name: s for s in self.steps}
        if self.config.regions == "pixels":
            for step in self.steps:
                if not (step.spatial and isinstance(step.rule, WindowRule)):
                    continue
                (ho, wo), (kh, kw) = step.out_hw, step.rule.kernel
                if ho * wo * kh * kw <= GATHER_TABLE_MAX:
                    step.gather = step.rule.gather_index(torch.arange(ho * wo), wo, self.step_of[step.inputs[0]].out_hw)
        self.full_flops = sum(s.full_flops for s in self.steps)
        self.head_flops = sum(s.full_flops for s in self.steps if not s.spatial)
        self.views: Views | None = None
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

    def _check(self, frame: torch.Tensor) -> None:
        if tuple(frame.shape) != self.frame_shape:
            c, h, w = self.frame_shape
            raise FrameSizeError(
                f"frame of shape {tuple(frame.shape)} does not fit this engine, built for {self.frame_shape} "
                f"(channels, height, width): resize frames to {w}x{h} (width x height) before streaming them")

    @torch.no_grad()
    def full(self, frame: torch.Tensor) -> torch.Tensor:
        """Full inference on one frame (3, H, W) -> the model's output for it, (1, ...)."""
        return self.model(frame[None])

    @torch.no_grad()
    def materialise(self, frame: torch.Tensor) -> torch.Tensor:
        """Full inference on ``frame``, kept as the new base views; returns the output (1, ...)."""
        self._check(frame)
        with _threads(self.threads):
            return self._materialise(frame)

    def _materialise(self, frame: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {}
        kept: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for step in self.steps:
            name = step.node.name
            env[name] = frame[None].clone() if step.node.op == "placeholder" else self._call(step.node, env)
            if step.needs_view:
                value = env[name]
                if value.data_ptr() in seen:  # an identity layer: its view must not alias another
                    value = value.clone()
                seen.add(value.data_ptr())
                kept[name] = value
        if self.config.regions == "pixels":
            self.views = Views.by_rows(kept, {s.node.name for s in self.steps if s.spatial and s.needs_view})
        else:
            self.views = Views(kept)
        self.since_refresh = 0
        return env[self.output_name]

    def plan(self, boxes: list[Box], call_cost: bool = True) -> tuple[dict[str, list[Box]], float]:
        """The boxes every spatial layer recomputes for a frame whose input changed in ``boxes``, and the FLOPs.

        Box arithmetic only: the engine uses it to decide, before any tensor
        work, whether full inference is cheaper. ``call_cost=False`` plans
        without merging boxes to save kernel calls: the FLOPs the regions need.
        """
        cfg, tau = self.config, self.config.effective_tau
        if not call_cost:
            cfg = replace(cfg, call_flops=0.0, flops_per_weight_byte=0.0)
        regions: dict[str, list[Box]] = {}
        flops = self.head_flops
        for step in self.steps:
            if not step.spatial:
                continue
            name, rule = step.node.name, step.rule
            if step.node.op == "placeholder":
                out = list(boxes)
            elif isinstance(rule, PointwiseRule):
                out = regions[step.inputs[0]]
            elif isinstance(rule, WindowRule):
                mapped = (rule.out_box(b, step.out_hw, tau) for b in regions[step.inputs[0]])
                free = (cfg.call_flops + cfg.flops_per_weight_byte * rule.weight_bytes) / rule.cost
                out = merge_boxes([o for o in mapped if o is not None], cfg.merge_slack, cfg.max_boxes, free)
            else:
                out = merge_boxes([b for src in step.inputs for b in regions[src]], cfg.merge_slack, cfg.max_boxes,
                                  cfg.call_flops / rule.cost)
            regions[name] = out
            if rule is not None:
                flops += rule.cost * sum(b.area for b in out)
        return regions, flops

    def plan_pixels(self, changed: torch.Tensor) -> tuple[dict[str, torch.Tensor], float]:
        """The positions every spatial layer recomputes for a frame whose input changed in ``changed`` (H, W),
        as flat indices into its map, and the FLOPs. Mask arithmetic only: run before any tensor work, to
        decide whether full inference is cheaper."""
        tau = self.config.effective_tau
        masks: dict[str, torch.Tensor] = {}
        positions: dict[str, torch.Tensor] = {}
        flops = self.head_flops
        for step in self.steps:
            if not step.spatial:
                continue
            name, rule, src = step.node.name, step.rule, step.inputs[:1] and step.inputs[0]
            if isinstance(rule, PointwiseRule):  # same positions as its input
                masks[name], positions[name] = masks[src], positions[src]
            else:
                if step.node.op == "placeholder":
                    mask = changed
                elif isinstance(rule, WindowRule):
                    mask = rule.out_mask(masks[src], step.out_hw, tau)
                else:
                    mask = masks[src] | masks[step.inputs[1]]
                masks[name], positions[name] = mask, mask.flatten().nonzero().squeeze(1)
            if rule is not None:
                flops += rule.cost * len(positions[name])
        return positions, flops

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
                src = rows[step.inputs[0]]
                if step.gather is not None:
                    index = step.gather.index_select(0, pos)  # (N, kh*kw)
                else:
                    index = rule.gather_index(pos, step.out_hw[1], self.step_of[step.inputs[0]].out_hw)
                windows = src.index_select(0, index.flatten()).view(*index.shape, src.shape[1])
                if rule.pad_value != 0.0 and any(rule.padding):
                    windows.masked_fill_((index == len(src) - 1)[..., None], rule.pad_value)
                vals = rule.rows(windows)
            else:
                vals = rows[step.inputs[0]][pos] + rows[step.inputs[1]][pos]
            values[name] = vals
            if step.needs_view:
                rows[name].index_copy_(0, pos, vals)
        out = self.output_name
        return views.tensors[out].clone() if self.step_of[out].spatial else full_env[out]

    @torch.no_grad()
    def _propagate(self, frames: list[torch.Tensor], plans: list[dict[str, list[Box]]]) -> tuple[torch.Tensor, dict[str, Delta]]:
        """Run one micro-batch of frames, with their plans, against the base views: outputs (F, ...), deltas."""
        assert self.views is not None
        views, frame_ids = self.views, list(range(len(frames)))
        deltas: dict[str, Delta] = {}
        full_env: dict[str, Any] = {}
        for step in self.steps:
            name, rule = step.node.name, step.rule
            if not step.spatial:
                env = {src: views.materialise(src, deltas.get(src), frame_ids) if src in deltas else full_env[src]
                       for src in step.inputs}
                with _threads(self.threads):
                    full_env[name] = self._call(step.node, env)
                continue
            delta = Delta()
            if isinstance(rule, PointwiseRule):
                for entries, values in deltas[step.inputs[0]].groups:
                    with _threads(self._threads_for(rule.cost * values[0, 0].numel() * len(entries))):
                        delta.add(entries, rule.apply(values))
                deltas[name] = delta
                continue
            grouped: dict[tuple[int, int], list[tuple[int, Box]]] = defaultdict(list)
            for f in frame_ids:
                for b in plans[f][name]:
                    grouped[(b.h, b.w)].append((f, b))
            for items in grouped.values():
                if step.node.op == "placeholder":
                    values = torch.stack([frames[f][:, b.y0:b.y1, b.x0:b.x1] for f, b in items])
                elif isinstance(rule, WindowRule):
                    src = step.inputs[0]
                    x = views.read_windows(src, deltas[src], [(f, rule.in_window(b)) for f, b in items], rule.pad_value)
                    with _threads(self._threads_for(rule.cost * items[0][1].area * len(items))):
                        values = rule.apply(x)
                else:
                    a, b = (views.read_windows(s, deltas[s], items) for s in step.inputs)
                    values = a + b
                delta.add(items, values)
            deltas[name] = delta
        out = self.output_name
        outputs = views.materialise(out, deltas.get(out), frame_ids) if out in deltas else full_env[out]
        return outputs, deltas

    def _threads_for(self, flops: float) -> int:
        return self.threads if flops >= self.config.parallel_flops else 1

    def _commit(self, deltas: dict[str, Delta], frame: int) -> None:
        assert self.views is not None
        for step in self.steps:
            if step.spatial and step.needs_view and step.node.name in deltas:
                self.views.commit(step.node.name, deltas[step.node.name], frame)

    @torch.no_grad()
    def process(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[FrameStat]]:
        """Stream frames (N, 3, H, W) in [0, 1] through the engine, in order; state carries over calls.

        Returns the outputs (N, ...) and one FrameStat per frame. A frame gets
        full inference (and becomes the new base) when it is the first, when
        its boxes cover more than ``refresh_share``, when propagating it would
        cost more than ``max_cost`` of full inference, or (approx) every
        ``refresh_every`` frames.
        """
        with _threads(1):
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
            out, deltas = self._propagate([frames[i] for i, _, _ in pending], [p for _, p, _ in pending])
            self._commit(deltas, len(pending) - 1)
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
                    positions, flops = self.plan_pixels(mask)
                    stat = FrameStat(False, share, float(mask.float().mean()), 0, flops, 0.0, flops)
                else:
                    boxes, share = detect_changes(frame, base, cfg.threshold, cfg.tile, cfg.min_pixels)
                    regions, flops = self.plan(boxes)
                    needed = self.plan(boxes, call_cost=False)[1] if cfg.call_flops or cfg.flops_per_weight_byte else flops
                    stat = FrameStat(False, share, sum(b.area for b in boxes) / area, len(boxes), flops, 0.0, needed)
                due = cfg.mode == "approx" and cfg.refresh_every and self.since_refresh + 1 >= cfg.refresh_every
                if not (due or stat.box_share > cfg.refresh_share or flops > cfg.max_cost * self.full_flops):
                    self.since_refresh += 1
                    if cfg.regions == "pixels":
                        with _threads(self.threads):
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
