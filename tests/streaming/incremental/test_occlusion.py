from dataclasses import replace

import pytest
import torch

from mlsys.errors import SpecError
from mlsys.model.cnn import build_cnn
from mlsys.streaming.incremental.occlusion import OcclusionConfig, OcclusionExplainer, grid, tune_tau
from mlsys.streaming.incremental.quality import ssim

SIZE, PATCH = 40, 8


# one intra-op thread (tests/conftest.py): results do not depend on it; on a loaded 2-core host tiny ops
# run 10x faster
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    return build_cnn("resnet18", width=0.125, num_classes=10, seed=5)  # residual adds, a strided 7x7, pools


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    blob = torch.exp(-((yy - 0.4) ** 2 + (xx - 0.6) ** 2) / 0.02)  # one object on a plain background
    return (torch.stack([blob, 0.5 * blob, 1 - blob]) + 0.05 * torch.rand(3, SIZE, SIZE, generator=g)).clamp(0, 1)


def test_exact_heatmap_equals_full_inference_of_every_occluded_copy(net, image):
    config = OcclusionConfig(patch=PATCH, stride=4, batch=7)  # the last batch is short; border copies widen
    explainer = OcclusionExplainer(net, (3, SIZE, SIZE), config)
    heat = explainer.explain(image)
    assert heat.ys == grid(SIZE, PATCH, 4) == list(range(0, 33, 4)) and heat.probs.shape == (9, 9)
    ys, xs = [y for y in heat.ys for _ in heat.xs], [x for _ in heat.ys for x in heat.xs]
    with torch.no_grad():
        full = net(explainer.occluded(image, ys, xs))
    ours, flops = explainer.logits(ys, xs)
    assert float(((ours - full).norm(dim=-1) / full.norm(dim=-1)).max()) <= 1e-5
    torch.testing.assert_close(heat.probs.flatten(), full.softmax(-1)[:, heat.target], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert heat.target == int(net(image[None]).argmax())
    assert 1 < heat.theoretical_speedup and flops < heat.full_flops * len(ys)
    assert heat.importance.shape == heat.probs.shape


def test_approximate_heatmap_without_threshold_or_drill_down_is_the_exact_one(net, image):
    exact = OcclusionExplainer(net, (3, SIZE, SIZE), OcclusionConfig(patch=PATCH, stride=4)).explain(image)
    same = OcclusionExplainer(net, (3, SIZE, SIZE), OcclusionConfig(patch=PATCH, stride=4, mode="approx",
                                                                    coarse_stride=4)).explain(image)
    torch.testing.assert_close(same.probs, exact.probs)
    # drill-down: the coarse pass (stride 8: 5x5) plus the top half of the rest of the fine grid
    drill = OcclusionExplainer(net, (3, SIZE, SIZE), OcclusionConfig(patch=PATCH, stride=4, mode="approx",
                                                                     coarse_stride=8, top_share=0.5)).explain(image)
    assert drill.positions == 25 + 41 and drill.theoretical_speedup > exact.theoretical_speedup
    known = torch.tensor([[y % 8 == 0 and x % 8 == 0 for x in exact.xs] for y in exact.ys])
    torch.testing.assert_close(drill.probs[known], exact.probs[known])  # coarse positions are exact values
    assert ssim(drill.probs, exact.probs) > 0.5
    cut = OcclusionExplainer(net, (3, SIZE, SIZE), OcclusionConfig(patch=PATCH, stride=4, mode="approx", tau=0.3,
                                                                   coarse_stride=4)).explain(image, exact.target)
    assert cut.flops < exact.flops and not torch.equal(cut.probs, exact.probs)


def test_tau_is_tuned_to_the_smallest_that_reaches_the_target_ssim(net, image):
    config = OcclusionConfig(patch=PATCH, stride=8, coarse_stride=8)
    exact = OcclusionExplainer(net, (3, SIZE, SIZE), config).explain(image)
    tau, tried = tune_tau(net, image, config, 0.9, exact=exact, taus=(0.2, 0.5, 1.0))
    assert tried[-1][0] == tau and all(s < 0.9 for _, s in tried[:-1]) and tried[-1][1] >= 0.9
    assert tune_tau(net, image, config, 1.0 + 1e-9, exact=exact, taus=(0.2, 0.5))[0] == 1.0  # none reaches it


def test_bad_occlusion_settings_name_the_field_and_the_fix():
    with pytest.raises(SpecError, match=r"OcclusionConfig.patch=0 is invalid: use a patch side"):
        OcclusionConfig(patch=0)
    with pytest.raises(SpecError, match=r"OcclusionConfig.tau=0.5 is invalid: tau applies to mode='approx' only"):
        OcclusionConfig(tau=0.5)
    with pytest.raises(SpecError, match=r"OcclusionConfig.top_share=0 is invalid"):
        replace(OcclusionConfig(mode="approx"), top_share=0)
