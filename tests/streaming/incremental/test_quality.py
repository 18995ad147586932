import pytest
import torch

from mlsys.streaming.incremental.quality import agreement, ssim


def test_agreement_figures_on_hand_made_logits():
    full = torch.tensor([[5.0, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]])
    ours = torch.tensor([[5.0, 4, 3, 2, 0, 1], [5, 1, 2, 3, 4, 0]])  # frame 0: same top 1, top 5 {0..3, 5} vs {0..4}
    got = agreement(ours, full)
    assert got["top1_agreement"] == 0.5
    assert got["top5_overlap"] == pytest.approx((4 / 5 + 4 / 5) / 2)
    p_ours, p_full = ours.softmax(-1), full.softmax(-1)
    assert got["top_prob_abs_diff"] == pytest.approx(
        (abs(p_ours[0, 0] - p_full[0, 0]) + abs(p_ours[1, 5] - p_full[1, 5])).item() / 2, rel=1e-6)
    assert got["max_rel_error"] == pytest.approx(float((ours[1] - full[1]).norm() / full[1].norm()))
    assert agreement(full, full) == {"top1_agreement": 1.0, "top5_overlap": 1.0, "top_prob_abs_diff": 0.0,
                                     "max_rel_error": 0.0}
    with pytest.raises(ValueError, match="must both be"):
        agreement(ours[0], full[0])


@pytest.mark.parametrize("shape", [(53, 53), (14, 20), (5, 6)])
def test_ssim_is_scikit_image_s(shape):
    from skimage.metrics import structural_similarity

    ref = torch.rand(*shape, dtype=torch.float64)
    for x in (ref + 0.1 * torch.randn(*shape, dtype=torch.float64), ref.flip(0), ref):
        win = min(7, *shape)
        win -= 1 - win % 2
        want = structural_similarity(x.numpy(), ref.numpy(), data_range=float(ref.max() - ref.min()), win_size=win)
        assert ssim(x, ref) == pytest.approx(want, abs=1e-9)
    assert ssim(ref, ref) == pytest.approx(1.0)
