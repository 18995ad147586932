"""Propagation rules: which output region an input patch reaches, per layer type.

    window     conv (grouped, depthwise; a zero/constant pad before it folded in: TF "same"), max/avg pool
                                     out box = every output whose window touches the patch;
                                     computed from the input window around it (halo included)
    pointwise  batch norm (eval), ReLU-type activations, dropout (eval), arithmetic with a number
                                     out box = in box
    add        residual addition     out region = union of both inputs' regions
    full       global pooling, flatten, linear      recomputed in full (cheap, not spatial)

Along one axis, with kernel k, stride s, padding p (before the map; the padding after it only sizes the
output, so asymmetric "same" padding needs nothing else), dilation d and an input
patch [a, b), output o reads inputs [o*s - p, o*s - p + (k-1)*d], so::

    affected outputs  lo = ceil((a + p - (k-1)d) / s)    hi = floor((b - 1 + p) / s) + 1
    input window      [lo*s - p, (hi-1)*s - p + (k-1)d + 1)     (may stick out: padded)

Approximate mode (Krypton's tau): an output box whose side would exceed
``tau`` x the map's side is cut back symmetrically, never below its core (the
outputs whose window *centre* lies in the patch), so patches stop growing in
deep layers and the rest of the map keeps its materialised values.

Per position (the engine's default, ``regions="pixels"``), a region is a
boolean mask and a window layer runs as gather + GEMM, one call for all of a
frame's changed positions however scattered they are::

    out mask   = the in mask dilated by the window (k, s, p, d): outputs whose window touches a change
    core mask  = the in mask sampled at each window's centre (approximate mode past tau)
    gather     view rows (H*W + 1, C), row H*W = padding  ->  (N, k*k, C)  ->  rows op  ->  (N, C_out)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from mlsys.streaming.incremental.region import Box

# Time per FLOP of a layer's rows recomputed at 5% of its positions, against full inference of the layer
# (2-core x86 host, one thread; EfficientNet-Lite0 and VGG-16 at 224x224): dense kxk GEMMs run near full speed,
# 1x1 GEMMs on few rows and pools lose ~2x, depthwise gathers ~16x (full inference's kernel streams the map once)
ROW_WEIGHTS = {"dense": 1.0, "1x1": 2.0, "pool": 2.0, "depthwise": 16.0}
SMALL_GEMM = 1 << 20  # multiply-adds below which a GEMM skips oneDNN's packed linear (its fixed cost dominates)


class UnsupportedLayerError(ValueError):
    """A layer the incremental engine cannot propagate a patch through."""


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _axis(a: int, b: int, n_out: int, k: int, s: int, p: int, d: int, tau: float) -> tuple[int, int] | None:
    ext = (k - 1) * d
    lo = max(0, math.ceil((a + p - ext) / s))
    hi = min(n_out, (b - 1 + p) // s + 1)
    if lo >= hi:
        return None
    if tau >= 1.0:
        return lo, hi
    c = ext / 2
    clo = min(max(lo, math.ceil((a + p - c) / s)), hi - 1)
    chi = max(min(hi, math.floor((b - 1 + p - c) / s) + 1), clo + 1)
    allowed = max(chi - clo, math.ceil(tau * n_out))
    if hi - lo > allowed:
        cut = hi - lo - allowed
        lo, hi = min(lo + cut // 2, clo), max(hi - (cut - cut // 2), chi)
    return lo, hi


@dataclass(frozen=True)
class WindowRule:
    """A sliding-window layer (conv, pool): computed on padded input windows around each patch."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pad_value: float
    apply: Callable[[torch.Tensor], torch.Tensor]  # (N, Cin, h_in, w_in) unpadded op -> (N, Cout, h, w)
    cost: float  # FLOPs per output position (all channels)
    weight_bytes: int = 0  # read in full by every call, however small its patch
    rows: Callable[[torch.Tensor], torch.Tensor] | None = None  # (N, kh*kw, Cin) gathered windows -> (N, Cout)
    # depthwise: (view rows (H*W, C), input rows (N, kh*kw), padding (N, kh*kw) or None) -> (N, C), tap by tap
    taps: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None
    # what a position recomputed per position costs per FLOP against full inference (the refresh decision)
    weight: float = 1.0
    kind: str = "window"

    @property
    def identity(self) -> bool:
        """A 1x1 window, stride 1, no padding: output position p reads input position p alone."""
        return self.kernel == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)

    def out_box(self, box: Box, out_hw: tuple[int, int], tau: float = 1.0) -> Box | None:
        ys = _axis(box.y0, box.y1, out_hw[0], self.kernel[0], self.stride[0], self.padding[0], self.dilation[0], tau)
        xs = _axis(box.x0, box.x1, out_hw[1], self.kernel[1], self.stride[1], self.padding[1], self.dilation[1], tau)
        if ys is None or xs is None:
            return None
        return Box(ys[0], ys[1], xs[0], xs[1])

    def in_window(self, out: Box) -> Box:
        (sy, sx), (py, px) = self.stride, self.padding
        ey, ex = (self.kernel[0] - 1) * self.dilation[0], (self.kernel[1] - 1) * self.dilation[1]
        return Box(out.y0 * sy - py, (out.y1 - 1) * sy - py + ey + 1, out.x0 * sx - px, (out.x1 - 1) * sx - px + ex + 1)

    def out_mask(self, mask: torch.Tensor, out_hw: tuple[int, int], tau: float = 1.0) -> torch.Tensor:
        """The outputs (Ho, Wo) that the changed inputs ``mask`` (H, W, bool) reach; past ``tau`` of the map,
        only the core: the outputs whose window centre changed.

        A dilation of the mask by the window, separable: an OR over the
        kernel's rows, then over its columns (30x faster than max-pooling a
        one-channel map on CPU).
        """
        (ky, kx), (sy, sx), (py, px), (dy, dx) = self.kernel, self.stride, self.padding, self.dilation
        ho, wo = out_hw
        # after the map: as much as the last window reads (asymmetric "same" padding pads less before than after)
        ay, ax = (max(0, (n - 1) * st + (k - 1) * d + 1 - size - p)
                  for n, st, k, d, size, p in ((ho, sy, ky, dy, mask.shape[0], py), (wo, sx, kx, dx, mask.shape[1], px)))
        padded = F.pad(mask, (px, ax, py, ay)) if py or px or ay or ax else mask
        cut = tau < 1.0 and (ky > sy or kx > sx)  # windows overlap: a halo that tau may cut
        if cut:
            cy, cx = (ky - 1) * dy // 2, (kx - 1) * dx // 2
            core = padded[cy:cy + (ho - 1) * sy + 1:sy, cx:cx + (wo - 1) * sx + 1:sx]
            if int(core.sum()) > tau * core.numel():  # the reach holds the core: it is past tau too
                return core
        rows = padded[0:(ho - 1) * sy + 1:sy]
        for i in range(1, ky):
            rows = rows | padded[i * dy:i * dy + (ho - 1) * sy + 1:sy]
        reach = rows[:, 0:(wo - 1) * sx + 1:sx]
        for j in range(1, kx):
            reach = reach | rows[:, j * dx:j * dx + (wo - 1) * sx + 1:sx]
        if not cut or int(reach.sum()) <= tau * reach.numel():
            return reach  # windows that do not overlap have no halo to cut
        return core

    def gather_index(self, positions: torch.Tensor, out_w: int, in_hw: tuple[int, int]) -> torch.Tensor:
        """Rows of the input view (H*W + 1 rows, the last one padding) each output position reads: (N, kh*kw)."""
        (ky, kx), (sy, sx), (py, px), (dy, dx) = self.kernel, self.stride, self.padding, self.dilation
        h, w = in_hw
        oy, ox = positions // out_w, positions % out_w
        iy = (oy * sy - py)[:, None] + torch.arange(ky).repeat_interleave(kx) * dy
        ix = (ox * sx - px)[:, None] + torch.arange(kx).repeat(ky) * dx
        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        return torch.where(inside, iy * w + ix, h * w)


@dataclass(frozen=True)
class PointwiseRule:
    """An elementwise layer: a patch maps to the same box."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    cost: float
    apply_: Callable[[torch.Tensor], torch.Tensor] | None = None  # in place, for values no one else reads
    kind: str = "pointwise"


@dataclass(frozen=True)
class AddRule:
    """A residual addition of two maps of the same shape."""

    cost: float
    kind: str = "add"


@dataclass(frozen=True)
class FullRule:
    """A non-spatial layer (global pooling, flatten, linear): recomputed in full from the whole map."""

    kind: str = "full"


Rule = WindowRule | PointwiseRule | AddRule | FullRule

_POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh,
                      nn.Hardswish, nn.Hardsigmoid, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d)
_POINTWISE_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.silu, F.gelu, torch.sigmoid, F.sigmoid,
                        torch.tanh, F.hardswish, F.elu, F.dropout}
_POINTWISE_METHODS = {"relu", "sigmoid", "tanh"}
_GLOBAL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear, nn.Softmax, nn.LogSoftmax)
_GLOBAL_FUNCTIONS = {torch.flatten, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.linear, torch.mean, F.softmax,
                     torch.softmax, F.log_softmax}
_GLOBAL_METHODS = {"flatten", "view", "reshape", "mean", "size", "softmax", "squeeze"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
# with a number: x * 255, x - 127, (...) / 128 (an input scaling written in forward)
_SCALAR_FUNCTIONS = {operator.add, operator.iadd, torch.add, operator.sub, torch.sub, operator.mul, torch.mul,
                     operator.truediv, torch.div}


def describe(node: fx.Node, gm: fx.GraphModule) -> str:
    """A node as a user knows it: its module path and type, or the function it calls."""
    if node.op == "call_module":
        return f"layer {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
    if node.op == "call_function":
        return f"function {getattr(node.target, '__name__', node.target)!s} (node {node.name!r})"
    return f"method .{node.target}() (node {node.name!r})"


class PadConv2d(nn.Module):
    """A constant pad followed by a conv (TF's asymmetric "same" padding): ``plan_graph`` folds a
    ``nn.ZeroPad2d``/``ConstantPad2d``/``F.pad`` into the conv it feeds, so the pad costs no map of its own."""

    def __init__(self, conv: nn.Conv2d, pad: tuple[int, int, int, int], value: float = 0.0):
        super().__init__()
        self.conv, self.pad, self.value = conv, tuple(int(p) for p in pad), float(value)  # pad: left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad, value=self.value))


def _conv_rule(m: nn.Conv2d, extra: tuple[int, int, int, int] = (0, 0, 0, 0), value: float = 0.0) -> WindowRule | str:
    if m.padding_mode != "zeros":
        return f"padding_mode={m.padding_mode!r} (only 'zeros' is supported)"
    k, s, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
    if value != 0.0 and m.padding not in ("valid", 0, (0, 0)):
        return "a constant pad of a non-zero value before a conv that pads with zeros"
    if isinstance(m.padding, str):
        if m.padding == "valid":
            p = (0, 0)
        elif all(((kk - 1) * dd) % 2 == 0 for kk, dd in zip(k, d)):
            p = ((k[0] - 1) * d[0] // 2, (k[1] - 1) * d[1] // 2)
        else:
            return "padding='same' with an even kernel (asymmetric padding)"
    else:
        p = _pair(m.padding)
    p = (p[0] + extra[2], p[1] + extra[0])  # before the map (top, left); what pads after needs no rule
    w, b, g = m.weight, m.bias, m.groups
    cost = 2.0 * m.out_channels * (m.in_channels // g) * k[0] * k[1]
    nbytes = w.numel() * w.element_size() + (b.numel() * b.element_size() if b is not None else 0)
    depthwise = g == m.out_channels == m.in_channels
    taps = _depthwise_taps(m, value) if depthwise else None
    weight = ROW_WEIGHTS["depthwise" if depthwise else "1x1" if k == (1, 1) else "dense"]
    return WindowRule(k, s, p, d, value, lambda t: F.conv2d(t, w, b, s, 0, d, g), cost, nbytes, _conv_rows(m), taps,
                      weight)


def _packs_weights(w: torch.Tensor) -> bool:
    """Whether oneDNN can run a GEMM on ``w`` with a pre-packed weight (CPU float32 builds with mkldnn)."""
    return (w.device.type == "cpu" and w.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _conv_rows(m: nn.Conv2d) -> Callable[[torch.Tensor], torch.Tensor]:
    """The conv as one GEMM over gathered windows (N, kh*kw, Cin) -> (N, Cout); grouped convs as a batched one."""
    g, cout = m.groups, m.out_channels
    kk = m.kernel_size[0] * m.kernel_size[1]
    w = m.weight.detach()  # (Cout, Cin/g, kh, kw) -> (kh*kw, Cin/g, Cout): matches the gather's row order
    bias = m.bias.detach() if m.bias is not None else None
    if g == 1:
        wm = w.permute(2, 3, 1, 0).reshape(-1, cout).contiguous()  # (kh*kw*Cin, Cout)
        wt = wm.t().contiguous()  # (Cout, kh*kw*Cin)
        if _packs_weights(wm):
            # oneDNN's linear with the weight reordered once into its blocked layout: 1.2-1.6x the GFLOP/s of
            # addmm at the row counts a frame's changes give (~150 rows of a 14x14 map), the same results; but
            # ~40 us a call however small: below SMALL_GEMM multiply-adds plain linear wins (3 us for 24x16x96)
            packed = torch.ops.mkldnn._reorder_linear_weight(wt, 256)
            small = SMALL_GEMM // wm.numel()

            def packed_rows(x: torch.Tensor) -> torch.Tensor:
                x = x.reshape(len(x), -1)
                if len(x) < small:
                    return F.linear(x, wt, bias)
                return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
            return packed_rows
        return lambda x: F.linear(x.reshape(len(x), -1), wt, bias)
    if g == cout == m.in_channels:  # depthwise: each channel its own kxk filter, a weighted sum over the window
        wd = w.reshape(cout, kk).t().contiguous()  # (kh*kw, C)
        return (lambda x: (x * wd).sum(1)) if bias is None else (lambda x: (x * wd).sum(1) + bias)
    wg = w.reshape(g, cout // g, -1, kk).permute(0, 3, 2, 1).reshape(g, -1, cout // g).contiguous()  # (g, kk*cin/g, cout/g)

    def grouped(x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        xg = x.reshape(n, kk, g, -1).permute(2, 0, 1, 3).reshape(g, n, -1)  # (g, N, kk*cin/g)
        out = torch.bmm(xg, wg).permute(1, 0, 2).reshape(n, cout)
        return out + bias if bias is not None else out
    return grouped


def _depthwise_taps(m: nn.Conv2d, pad_value: float) -> Callable[..., torch.Tensor]:
    """A depthwise conv at N positions, one multiply-add of (N, C) rows per kernel tap. Gathering all windows
    first, (N, kh*kw, C), streams kh*kw times the map through memory: 10x slower once it leaves the cache."""
    kk = m.kernel_size[0] * m.kernel_size[1]
    wd = m.weight.detach().reshape(m.out_channels, kk).t().contiguous()  # (kh*kw, C)
    bias = m.bias.detach() if m.bias is not None else None

    def taps(src: torch.Tensor, index: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        acc = torch.zeros(len(index), src.shape[1]) if bias is None else bias.expand(len(index), -1).clone()
        for k, rows in enumerate(index.t()):
            x = src.index_select(0, rows)
            if pad is not None and bool(pad[:, k].any()):
                x.masked_fill_(pad[:, k, None], pad_value)
            acc.addcmul_(x, wd[k])
        return acc
    return taps


def _pool_rule(m: nn.Module, channels: int) -> WindowRule | str:
    if m.ceil_mode:
        return "ceil_mode=True"
    k = _pair(m.kernel_size)
    s = _pair(m.stride if m.stride is not None else m.kernel_size)
    p = _pair(m.padding)
    cost = float(channels * k[0] * k[1])
    if isinstance(m, nn.MaxPool2d):
        if m.return_indices:
            return "return_indices=True"
        d = _pair(m.dilation)
        return WindowRule(k, s, p, d, float("-inf"), lambda t: F.max_pool2d(t, k, s, 0, d), cost,
                          rows=lambda x: x.amax(1), weight=ROW_WEIGHTS["pool"])
    if not m.count_include_pad and p != (0, 0):
        return "count_include_pad=False with padding"
    div = m.divisor_override
    return WindowRule(k, s, p, (1, 1), 0.0, lambda t: F.avg_pool2d(t, k, s, 0, divisor_override=div), cost,
                      rows=lambda x: x.sum(1) / (div or k[0] * k[1]), weight=ROW_WEIGHTS["pool"])


def _no_inplace(m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    # A patch may be shared with the layer before (its view); an in-place op would corrupt it.
    if getattr(m, "inplace", False):
        return lambda t: m(t.clone())
    return m


def rule_for(node: fx.Node, gm: fx.GraphModule, channels: int) -> Rule | str:
    """The propagation rule of ``node``, or a string saying why it has none (unsupported)."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, PadConv2d):
            return _conv_rule(m.conv, m.pad, m.value)
        if isinstance(m, nn.Conv2d):
            return _conv_rule(m)
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            return _pool_rule(m, channels)
        if isinstance(m, nn.BatchNorm2d):
            if m.training or not m.track_running_stats:
                return "batch norm in training mode (call model.eval())"
            return PointwiseRule(m, 2.0 * channels)
        if isinstance(m, (nn.Dropout, nn.Dropout2d)) and m.training:
            return "dropout in training mode (call model.eval())"
        if isinstance(m, nn.ReLU):
            return PointwiseRule(_no_inplace(m), float(channels), torch.relu_)
        if isinstance(m, nn.Hardtanh):  # ReLU6 too
            lo, hi = m.min_val, m.max_val
            return PointwiseRule(_no_inplace(m), float(channels), lambda t: t.clamp_(lo, hi))
        if isinstance(m, _POINTWISE_MODULES):
            return PointwiseRule(_no_inplace(m), float(channels))
        if isinstance(m, _GLOBAL_MODULES):
            return FullRule()
        return "no propagation rule for this layer type"
    if node.op == "call_function":
        numbers = [a for a in (*node.args, *node.kwargs.values()) if not isinstance(a, fx.Node)]
        if node.target in _SCALAR_FUNCTIONS and len(node.args) == 2 and not node.kwargs and len(numbers) == 1 \
                and isinstance(numbers[0], (int, float)):
            fn, args = node.target, node.args
            if isinstance(args[0], fx.Node):
                return PointwiseRule(lambda t: fn(t, args[1]), float(channels))
            return PointwiseRule(lambda t: fn(args[0], t), float(channels))
        if node.target in _ADD_FUNCTIONS:
            return AddRule(float(channels))
        if node.target in _POINTWISE_FUNCTIONS:
            fn, rest, kwargs = node.target, node.args[1:], {k: v for k, v in node.kwargs.items() if k != "inplace"}
            if any(isinstance(a, fx.Node) for a in (*rest, *kwargs.values())):
                return "a pointwise function with tensor arguments"
            relu_ = torch.relu_ if fn in (F.relu, torch.relu) and not rest and not kwargs else None
            return PointwiseRule(lambda t: fn(t, *rest, **kwargs), float(channels), relu_)
        if node.target in _GLOBAL_FUNCTIONS:
            return FullRule()
        return "no propagation rule for this function"
    if node.op == "call_method":
        if node.target in _POINTWISE_METHODS and len(node.args) == 1 and not node.kwargs:
            name = node.target
            return PointwiseRule(lambda t: getattr(t, name)(), float(channels))
        if node.target == "add":
            return AddRule(float(channels))
        if node.target in _GLOBAL_METHODS:
            return FullRule()
        return "no propagation rule for this method"
    return f"graph op {node.op!r}"
