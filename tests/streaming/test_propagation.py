import pytest
import torch
from torch import fx, nn

from mlsys.streaming.propagation import FullRule, PointwiseRule, WindowRule, rule_for
from mlsys.streaming.region import Box


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
