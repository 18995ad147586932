import pytest
import torch
from torch import fx, nn

from mlsys.streaming.incremental.propagation import (
    FullRule,
    PointwiseRule,
    WindowRule,
    rule_for,
)
from mlsys.streaming.incremental.region import Box


def _rule(module, channels=2):
    gm = fx.symbolic_trace(nn.Sequential(module))
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    return rule_for(node, gm, channels)


@pytest.mark.parametrize("module", [
    nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Conv2d(2, 3, 5, padding=2, dilation=1),
    nn.Conv2d(2, 3, 3, padding=2, dilation=2), nn.Conv2d(2, 3, 1, stride=2), nn.Conv2d(2, 3, 7, stride=2, padding=3),
    nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(3, 1, 1),
])
def test_out_box_is_exactly_the_outputs_a_patch_reaches(module):
    torch.manual_seed(0)
    x = torch.rand(1, 2, 17, 19)
    rule = _rule(module)
    assert isinstance(rule, WindowRule)
    base = module(x)
    box = Box(5, 9, 6, 8)
    y = x.clone()
    y[:, :, box.y0:box.y1, box.x0:box.x1] += torch.rand(1, 2, box.h, box.w) + 0.5
    changed = (module(y) - base).abs().amax((0, 1)) > 0
    out = rule.out_box(box, tuple(base.shape[2:]))
    mask = torch.zeros_like(changed)
    if out is not None:
        mask[out.y0:out.y1, out.x0:out.x1] = True
    assert not bool((changed & ~mask).any()), "an affected output lies outside the propagated box"
    # computing the box from its (padded) input window gives the same values as the full layer
    if out is not None:
        win = rule.in_window(out)
        pad = (max(0, -win.x0), max(0, win.x1 - 19), max(0, -win.y0), max(0, win.y1 - 17))
        inside = win.clip(17, 19)
        patch = torch.nn.functional.pad(y[:, :, inside.y0:inside.y1, inside.x0:inside.x1], pad, value=rule.pad_value)
        torch.testing.assert_close(rule.apply(patch), module(y)[:, :, out.y0:out.y1, out.x0:out.x1])


def test_tau_truncates_growth_but_keeps_the_core():
    rule = _rule(nn.Conv2d(2, 2, 3, padding=1))
    exact = rule.out_box(Box(10, 14, 10, 14), (64, 64), tau=1.0)
    cut = rule.out_box(Box(10, 14, 10, 14), (64, 64), tau=0.01)
    assert exact == Box(9, 15, 9, 15)
    assert cut == Box(10, 14, 10, 14)


def test_rule_kinds_and_unsupported_reasons():
    assert isinstance(_rule(nn.ReLU()), PointwiseRule)
    assert isinstance(_rule(nn.BatchNorm2d(2).eval()), PointwiseRule)
    assert "training" in _rule(nn.BatchNorm2d(2).train())
    assert isinstance(_rule(nn.AdaptiveAvgPool2d(1)), FullRule)
    assert isinstance(_rule(nn.Linear(2, 2)), FullRule)
    assert "ceil_mode" in _rule(nn.MaxPool2d(2, ceil_mode=True))
    assert "padding_mode" in _rule(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    assert "no propagation rule" in _rule(nn.Upsample(scale_factor=2))


WINDOW_LAYERS = [
    nn.Conv2d(4, 3, 3, padding=1), nn.Conv2d(4, 3, 3, stride=2, padding=1), nn.Conv2d(4, 3, 3, padding=2, dilation=2),
    nn.Conv2d(4, 3, 1, stride=2), nn.Conv2d(4, 3, 7, stride=2, padding=3), nn.Conv2d(4, 6, 3, padding=1, groups=2),
    nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.Conv2d(4, 3, 3, padding=4), nn.Conv2d(4, 5, 3, bias=False),
    nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(3, 1, 1), nn.AvgPool2d(2),
]


def _layer_on_input(module, seed):
    """A random (1, 4, 17, 19) input, the layer's rule, and the layer's full output on it."""
    torch.manual_seed(seed)
    x = torch.rand(1, 4, 17, 19)
    return x, _rule(module, channels=4), module(x)


@pytest.mark.parametrize("module", WINDOW_LAYERS)
def test_out_mask_is_exactly_the_outputs_scattered_changes_reach(module):
    x, rule, base = _layer_on_input(module, 1)
    changed_in = torch.rand(17, 19) < 0.04  # scattered pixels, as in real video
    y = x + changed_in * (torch.rand(1, 4, 17, 19) + 0.5)
    reached = (module(y) - base).abs().amax((0, 1)) > 0
    mask = rule.out_mask(changed_in, tuple(base.shape[2:]))
    assert mask.dtype == torch.bool and tuple(mask.shape) == tuple(base.shape[2:])
    assert not bool((reached & ~mask).any()), "an affected output lies outside the propagated mask"
    # and nothing more: every masked output has a changed input in its window (max-pooling says which)
    k, s, p, d = rule.kernel, rule.stride, rule.padding, rule.dilation
    padded = torch.nn.functional.pad(changed_in[None, None].float(), (p[1], p[1], p[0], p[0]))
    want = torch.nn.functional.max_pool2d(padded, k, s, dilation=d)[0, 0, :mask.shape[0], :mask.shape[1]] > 0
    assert torch.equal(mask, want)


@pytest.mark.parametrize("packed", [True, False], ids=["onednn", "addmm"])
@pytest.mark.parametrize("module", WINDOW_LAYERS)
def test_gathered_rows_give_the_layer_s_outputs_at_any_positions(module, packed, monkeypatch):
    from mlsys.streaming.incremental import propagation

    if not packed:  # as on a GPU, or a CPU build without oneDNN
        monkeypatch.setattr(propagation, "_packs_weights", lambda w: False)
    elif not propagation._packs_weights(torch.zeros(1)):
        pytest.skip("this torch build has no oneDNN")
    x, rule, full = _layer_on_input(module, 2)
    ho, wo = full.shape[2:]
    rows = torch.cat([x[0].permute(1, 2, 0).reshape(17 * 19, 4), torch.zeros(1, 4)])  # the view, then padding
    pos = torch.randperm(ho * wo)[: max(1, ho * wo // 3)].sort().values
    index = rule.gather_index(pos, wo, (17, 19))
    windows = rows[index]
    if rule.pad_value != 0.0:
        windows.masked_fill_((index == 17 * 19)[..., None], rule.pad_value)
    want = full[0].permute(1, 2, 0).reshape(ho * wo, -1)[pos]
    torch.testing.assert_close(rule.rows(windows), want, rtol=1e-5, atol=1e-5)


def test_tau_keeps_a_mask_s_core_past_its_share_of_the_map():
    rule = _rule(nn.Conv2d(2, 2, 3, padding=1))
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[10:14, 10:14] = True
    assert int(rule.out_mask(mask, (64, 64), tau=1.0).sum()) == 36  # a one-pixel halo
    assert int(rule.out_mask(mask, (64, 64), tau=0.5).sum()) == 36  # 36 positions are within half the map
    assert torch.equal(rule.out_mask(mask, (64, 64), tau=0.001), mask)  # cut to the core: no growth
    pool = _rule(nn.MaxPool2d(2))  # windows that do not overlap have no halo: a change always reaches its output
    assert int(pool.out_mask(mask, (32, 32), tau=0.001).sum()) == 4


class _Padded(nn.Module):
    """TF "same" padding written three ways, a depthwise conv, ReLU6 and an input scaling in forward."""

    def __init__(self, pad, value=0.0, how="module"):
        super().__init__()
        self.pad = nn.ZeroPad2d(pad) if how == "module" and value == 0 else nn.ConstantPad2d(pad, value)
        self.how, self.args = how, (pad, value)
        self.conv = nn.Conv2d(4, 4, 3, stride=2, groups=4)

    def forward(self, x):
        x = (x * 2 - 1) / 3
        x = self.pad(x) if self.how == "module" else nn.functional.pad(x, self.args[0], value=self.args[1])
        return nn.functional.relu6(self.conv(x))


@pytest.mark.parametrize("pad,value,how", [((0, 1, 0, 1), 0.0, "module"), ((1, 2, 1, 2), 0.0, "function"),
                                           ((0, 1, 1, 0), 0.25, "module"), ((2, 0, 0, 1), -0.5, "function")])
def test_a_constant_pad_folds_into_the_conv_it_feeds_and_propagates_exactly(pad, value, how):
    from mlsys.streaming.incremental.graph import plan_graph
    from mlsys.streaming.incremental.propagation import PadConv2d

    module = _Padded(pad, value, how).eval()
    graph = plan_graph(module, (4, 16, 18))
    (conv,) = [s for s in graph.steps if s.node.op == "call_module"]  # the pad node is gone
    assert isinstance(graph.gm.get_submodule(conv.node.target), PadConv2d)
    rule = conv.rule
    assert rule.padding == (pad[2], pad[0]) and rule.pad_value == value and rule.taps is not None
    scale = [s for s in graph.steps if s.node.op == "call_function"][:2]
    assert all(isinstance(s.rule, PointwiseRule) for s in scale)  # x * 2, then - 1: pointwise with a number
    torch.manual_seed(3)
    x = torch.rand(1, 4, 16, 18)
    with torch.no_grad():
        inner = module.conv(nn.functional.pad((x * 2 - 1) / 3, pad, value=value))
        changed_in = torch.rand(16, 18) < 0.05
        y = x + changed_in * (torch.rand(1, 4, 16, 18) + 0.5)
        reached = (module.conv(nn.functional.pad((y * 2 - 1) / 3, pad, value=value)) - inner).abs().amax((0, 1)) > 0
    mask = rule.out_mask(changed_in, tuple(inner.shape[2:]))
    assert not bool((reached & ~mask).any()) and int(mask.sum()) <= int(reached.sum()) + 4 * changed_in.sum()
    rows = ((x * 2 - 1) / 3)[0].permute(1, 2, 0).reshape(16 * 18, 4)
    ho, wo = inner.shape[2:]
    pos = torch.arange(ho * wo)
    index = rule.gather_index(pos, wo, (16, 18))
    pad_mask = index == 16 * 18
    windows = rows[index.masked_fill(pad_mask, 0)].masked_fill(pad_mask[..., None], value)
    want = inner[0].permute(1, 2, 0).reshape(ho * wo, 4)
    torch.testing.assert_close(rule.rows(windows), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rule.taps(rows, index.masked_fill(pad_mask, 0), pad_mask), want, rtol=1e-5, atol=1e-5)
