"""Quality of approximate outputs, as their users judge it (torch alone).

    stream (classifier logits, ours vs full inference of the actual frames, (N, classes) each):
        top1_agreement        share of frames whose top class is the same
        top5_overlap          mean share of full inference's top 5 classes that ours has in its top 5
        top_prob_abs_diff     mean |p_ours(c) - p_full(c)|, c = full inference's top class (softmax probabilities)
        max_rel_error         max ||ours - full|| / ||full|| of the logits: reported, never a target (a trained
                              network's logits move 15% under +-1/255 noise that changes no label)
    heatmap (occlusion): ssim(approx, exact), SSIM with a 7x7 uniform window and sample covariance (scikit-image's
        defaults), data range = the exact heatmap's
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def agreement(ours: torch.Tensor, full: torch.Tensor, k: int = 5) -> dict[str, float]:
    """The stream figures above for logits ``ours`` and ``full`` (N, classes)."""
    if ours.shape != full.shape or ours.dim() != 2:
        raise ValueError(f"ours {tuple(ours.shape)} and full {tuple(full.shape)} must both be (frames, classes)")
    k = min(k, full.shape[1])
    p_ours, p_full = ours.float().softmax(-1), full.float().softmax(-1)
    top = full.argmax(-1, keepdim=True)
    a, b = ours.topk(k, -1).indices, full.topk(k, -1).indices
    overlap = (a[:, :, None] == b[:, None, :]).any(-1).float().sum(-1) / k
    rel = (ours - full).norm(dim=-1) / full.norm(dim=-1).clamp_min(1e-12)
    return {"top1_agreement": float((ours.argmax(-1) == full.argmax(-1)).float().mean()),
            f"top{k}_overlap": float(overlap.mean()),
            "top_prob_abs_diff": float((p_ours.gather(1, top) - p_full.gather(1, top)).abs().mean()),
            "max_rel_error": float(rel.max())}


def ssim(x: torch.Tensor, ref: torch.Tensor, window: int = 7) -> float:
    """SSIM of map ``x`` against ``ref`` (H, W), both floats; 1 means equal. The window shrinks to fit small maps."""
    if x.shape != ref.shape or x.dim() != 2:
        raise ValueError(f"maps {tuple(x.shape)} and {tuple(ref.shape)} must be equal 2-D shapes")
    window = min(window, *ref.shape)
    window -= 1 - window % 2  # odd
    data_range = float(ref.max() - ref.min()) or 1.0
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    a, b = x.double()[None, None], ref.double()[None, None]

    def mean(t: torch.Tensor) -> torch.Tensor:  # over each window, the valid region only (scikit-image crops the rest)
        return F.avg_pool2d(t, window, 1)

    ua, ub = mean(a), mean(b)
    cov = window * window / (window * window - 1)  # sample covariance
    va, vb, vab = cov * (mean(a * a) - ua * ua), cov * (mean(b * b) - ub * ub), cov * (mean(a * b) - ua * ub)
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    return float(s.mean())
