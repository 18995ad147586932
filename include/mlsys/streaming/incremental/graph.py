"""The engine's plan of a model: its ``torch.fx`` graph as steps, each with a propagation rule.

    model ─fuse (conv + eval batch norm folded; a constant pad folded into the conv it feeds)─► graph module
          ─shapes of one frame─► per node:
        rule        how a changed region crosses it (propagation.py), or why it cannot
        spatial     its output is a map that regions propagate through; else recomputed in full
        needs_view  a later layer reads it whole or by windows: its output on the base frame is kept
        full_flops  what it costs on a whole frame

A layer with no rule fails with an error naming it, or (``on_unsupported="fallback"``)
makes it and everything after it non-spatial: recomputed in full from there on.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from mlsys.streaming.incremental.propagation import (
    AddRule,
    FullRule,
    PadConv2d,
    PointwiseRule,
    UnsupportedLayerError,
    WindowRule,
    describe,
    rule_for,
)


@dataclass
class Step:
    """One node of the graph, as the engine runs it."""

    node: fx.Node
    rule: Any
    spatial: bool
    inputs: list[str]
    out_hw: tuple[int, int] | None = None
    full_flops: float = 0.0
    needs_view: bool = False
    consumers: list[str] = field(default_factory=list)
    gather: torch.Tensor | None = None  # window layers, per position: input rows of every output position (Ho*Wo, kk)
    pad: torch.Tensor | None = None  # (Ho*Wo, kk): which of those read padding (their gather row is a stand-in)


@dataclass
class Graph:
    """A planned model: its graph module, its steps in graph order, and the layers recomputed in full."""

    gm: fx.GraphModule
    steps: list[Step]
    input_name: str
    output_name: str
    fallbacks: list[str]
    viewer: fx.GraphModule | None = None  # the same graph returning (output, *viewed maps): a base frame in one call


def _tensor_inputs(node: fx.Node) -> list[str]:
    found: list[str] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n.name))
    return found


def plan_graph(model: nn.Module, frame_shape: tuple[int, ...], on_unsupported: str = "error") -> Graph:
    """Trace ``model`` (eval, conv + batch norm folded), propagate a frame's shapes, and plan every node."""
    from torch.fx.experimental.optimization import fuse
    from torch.fx.passes.shape_prop import ShapeProp

    gm = fuse(model.eval())  # a traced copy, each conv's batch norm folded into it: one op instead of two
    _fold_pads(gm)
    gm = gm.to(memory_format=torch.channels_last)  # oneDNN's fastest layout; a map is then its view's rows
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros(1, *frame_shape).contiguous(memory_format=torch.channels_last))
    fallbacks: list[str] = []
    output_name = None
    steps: list[Step] = []
    by_name: dict[str, Step] = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            output_name = node.args[0].name if isinstance(node.args[0], fx.Node) else None
            if output_name is None:
                raise UnsupportedLayerError("the model must return a single tensor")
            by_name[output_name].needs_view = True
            continue
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()
        inputs = _tensor_inputs(node)
        for name in inputs:
            by_name[name].consumers.append(node.name)
        if node.op == "placeholder":
            step = Step(node, None, True, [], (shape[2], shape[3]))
        elif node.op == "get_attr":
            step = Step(node, FullRule(), False, [])
        else:
            channels = shape[1] if len(shape) == 4 else 0
            rule = rule_for(node, gm, channels)
            spatial_in = [by_name[n].spatial for n in inputs]
            spatial = (isinstance(rule, (WindowRule, PointwiseRule, AddRule)) and len(shape) == 4
                       and bool(spatial_in) and all(spatial_in))
            if isinstance(rule, AddRule) and spatial:
                spatial = len(inputs) == 2 and all(tuple(by_name[n].node.meta["tensor_meta"].shape) == shape
                                                   for n in inputs)
                if not spatial:
                    rule = "an addition with broadcasting or a constant"
            if isinstance(rule, WindowRule | PointwiseRule) and spatial and len(inputs) != 1:
                spatial, rule = False, "a layer with several tensor inputs"
            if not spatial and isinstance(rule, str) and any(spatial_in):
                msg = (f"{describe(node, gm)} is not supported by the incremental engine: {rule}. It "
                       "propagates patches through Conv2d (grouped, depthwise, "
                       "after a constant pad), MaxPool2d/AvgPool2d, BatchNorm2d (eval), ReLU-type activations, "
                       "arithmetic with a number and residual additions, and recomputes global pooling, flatten and linear "
                       "layers in full")
                if on_unsupported == "error":
                    raise UnsupportedLayerError(msg + "; replace the layer, or use on_unsupported='fallback' "
                                                      "to recompute in full from this layer on")
                fallbacks.append(msg)
                warnings.warn(msg + "; recomputing in full from this layer on", stacklevel=2)
            step = Step(node, rule, spatial, inputs, (shape[2], shape[3]) if spatial else None)
            if not spatial or isinstance(rule, (WindowRule, AddRule)):
                for name in inputs:
                    by_name[name].needs_view = True
        step.full_flops = _flops(gm, step, shape)
        steps.append(step)
        by_name[node.name] = step
    input_name = next(s.node.name for s in steps if s.node.op == "placeholder")
    by_name[input_name].needs_view = True
    assert output_name is not None  # every traced graph ends in an output node
    return Graph(gm, steps, input_name, output_name, fallbacks, _viewer(gm, [s for s in steps if s.needs_view]))


def _viewer(gm: fx.GraphModule, viewed: list[Step]) -> fx.GraphModule | None:
    """``gm`` returning its output and every viewed map, so a base frame runs as compiled code, not node by
    node; None when a node works in place (its input, a view, must then be copied first: node by node)."""
    for node in gm.graph.nodes:
        m = gm.get_submodule(node.target) if node.op == "call_module" else None
        if (getattr(m, "inplace", False) or node.kwargs.get("inplace") or node.target is operator.iadd
                or (node.op == "call_method" and str(node.target).endswith("_"))):
            return None
    graph, copies = fx.Graph(), {}
    out = graph.graph_copy(gm.graph, copies)
    graph.output((out, *(copies[s.node] for s in viewed)))
    return fx.GraphModule(gm, graph)

def _constant_pad(node: fx.Node, gm: fx.GraphModule) -> tuple[tuple[int, int, int, int], float] | None:
    """(left, right, top, bottom) and value of a 2-D constant pad node (``nn.ZeroPad2d``, ``ConstantPad2d``, ``F.pad``)."""
    if node.op == "call_module" and isinstance(m := gm.get_submodule(node.target), (nn.ZeroPad2d, nn.ConstantPad2d)):
        pad, value = m.padding, float(m.value)
    elif node.op == "call_function" and node.target is F.pad and len(node.args) >= 2:
        kwargs = {"mode": "constant", "value": 0.0, **dict(zip(("mode", "value"), node.args[2:])), **node.kwargs}
        pad, value = node.args[1], kwargs["value"] or 0.0
        if kwargs["mode"] != "constant" or not isinstance(value, (int, float)):
            return None
    else:
        return None
    if not isinstance(pad, (tuple, list)) or len(pad) != 4 or not all(isinstance(p, int) and p >= 0 for p in pad):
        return None
    return tuple(pad), float(value)  # type: ignore[return-value]


def _fold_pads(gm: fx.GraphModule) -> None:
    """A constant pad read by one conv alone becomes part of it (``PadConv2d``): TF's asymmetric "same"
    padding is then the conv's padding before the map, and the padded map is never materialised."""
    for node in list(gm.graph.nodes):
        found = _constant_pad(node, gm)
        if found is None or len(node.users) != 1 or not isinstance(node.args[0], fx.Node):
            continue
        user = next(iter(node.users))
        conv = gm.get_submodule(user.target) if user.op == "call_module" else None
        if (type(conv) is not nn.Conv2d or user.args != (node,) or user.kwargs
                or (found[1] != 0.0 and conv.padding not in ("valid", (0, 0)))):
            continue
        gm.add_submodule(user.target, PadConv2d(conv, *found))
        user.args = (node.args[0],)
        gm.graph.erase_node(node)
    gm.recompile()


def _flops(gm: fx.GraphModule, step: Step, shape: tuple) -> float:
    if step.spatial and step.rule is not None:
        return step.rule.cost * shape[2] * shape[3]
    node = step.node
    numel = 1
    for s in shape:
        numel *= s
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        m = m.conv if isinstance(m, PadConv2d) else m
        if isinstance(m, nn.Linear):
            return 2.0 * m.in_features * m.out_features
        if isinstance(m, nn.Conv2d):
            return 2.0 * numel * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    if node.op in ("placeholder", "get_attr"):
        return 0.0
    ins = [n for n in node.all_input_nodes if "tensor_meta" in n.meta and hasattr(n.meta["tensor_meta"], "shape")]
    in_numel = max((int(torch.Size(n.meta["tensor_meta"].shape).numel()) for n in ins), default=numel)
    return float(max(numel, in_numel))
