import pytest
import torch

from mlsys.model.cnn import build_cnn


@pytest.mark.parametrize("name", ["small", "vgg16", "resnet18"])
def test_cnns_are_seeded_eval_mode_and_input_sensitive(name):
    a = build_cnn(name, width=0.125, num_classes=7, seed=3)
    b = build_cnn(name, width=0.125, num_classes=7, seed=3)
    c = build_cnn(name, width=0.125, num_classes=7, seed=4)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
    assert ya.shape == (2, 7) and not a.training
    torch.testing.assert_close(ya, yb)
    assert not torch.allclose(ya, yc)
    # calibrated batch norms: the output depends on the input, not only on biases
    assert float((ya[0] - ya[1]).norm() / ya[0].norm()) > 0.01


def test_width_scales_channels_and_bad_arguments_are_named():
    assert sum(p.numel() for p in build_cnn("vgg16", width=0.25).parameters()) < \
        sum(p.numel() for p in build_cnn("vgg16", width=0.5).parameters()) / 3
    with pytest.raises(ValueError, match="unknown CNN 'alexnet'"):
        build_cnn("alexnet")
    with pytest.raises(ValueError, match="width=0"):
        build_cnn("small", width=0)
