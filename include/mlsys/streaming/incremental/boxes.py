"""The engine's box path (``regions="boxes"``, Krypton's patches): plan boxes per layer, propagate a micro-batch.

    frame t ──detect vs base input──► boxes ──► per layer (graph order):
        window layer   boxes ─out_box─► merged out boxes ─in_window─► read base+patches ─op─► patches
        pointwise      same boxes, op on the patches
        residual add   union of both inputs' boxes
        global / head  whole map (base + patches) ─► recomputed in full
    then (a stream) the last frame of the micro-batch is committed: its patches are written into the base views;
    (occlusion) nothing is committed: every occluded copy is diffed against the one unoccluded base.

Frames of one micro-batch are all diffed against the same base, so their
patches of equal size run through each layer in one call (Krypton's
multi-query batching).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

import torch

from mlsys.streaming.incremental.config import threads
from mlsys.streaming.incremental.propagation import PointwiseRule, WindowRule
from mlsys.streaming.incremental.region import Box, merge_boxes
from mlsys.streaming.incremental.views import Delta

Engine = Any  # an IncrementalEngine (engine.py imports this module)


def plan_boxes(engine: Engine, boxes: list[Box], call_cost: bool = True) -> tuple[dict[str, list[Box]], float]:
    """The boxes every spatial layer recomputes for a frame whose input changed in ``boxes``, and the FLOPs.

    Box arithmetic only: run before any tensor work, to decide whether full
    inference is cheaper. ``call_cost=False`` plans without merging boxes to
    save kernel calls: the FLOPs the regions need.
    """
    cfg, tau = engine.config, engine.config.effective_tau
    if not call_cost:
        cfg = replace(cfg, call_flops=0.0, flops_per_weight_byte=0.0)
    regions: dict[str, list[Box]] = {}
    flops = engine.head_flops
    for step in engine.steps:
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


@torch.no_grad()
def propagate_boxes(engine: Engine, frames: list[torch.Tensor],
                    plans: list[dict[str, list[Box]]]) -> tuple[torch.Tensor, dict[str, Delta]]:
    """Run one micro-batch of frames, with their plans, against the base views: outputs (F, ...), deltas.
    The base views are only read: ``commit`` makes a frame the base."""
    assert engine.views is not None
    views, frame_ids = engine.views, list(range(len(frames)))
    deltas: dict[str, Delta] = {}
    full_env: dict[str, Any] = {}
    for step in engine.steps:
        name, rule = step.node.name, step.rule
        if not step.spatial:
            env = {src: views.materialise(src, deltas.get(src), frame_ids) if src in deltas else full_env[src]
                   for src in step.inputs}
            with threads(engine.threads):
                full_env[name] = engine._call(step.node, env)
            continue
        delta = Delta()
        if isinstance(rule, PointwiseRule):
            for entries, values in deltas[step.inputs[0]].groups:
                with threads(engine.threads_for(rule.cost * values[0, 0].numel() * len(entries))):
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
                with threads(engine.threads_for(rule.cost * items[0][1].area * len(items))):
                    values = rule.apply(x)
            else:
                a, b = (views.read_windows(s, deltas[s], items) for s in step.inputs)
                values = a + b
            delta.add(items, values)
        deltas[name] = delta
    out = engine.output_name
    outputs = views.materialise(out, deltas.get(out), frame_ids) if out in deltas else full_env[out]
    return outputs, deltas


def commit(engine: Engine, deltas: dict[str, Delta], frame: int) -> None:
    """Make ``frame``'s value of every viewed layer the base view."""
    assert engine.views is not None
    for step in engine.steps:
        if step.spatial and step.needs_view and step.node.name in deltas:
            engine.views.commit(step.node.name, deltas[step.node.name], frame)
