"""Distances between two samples of a column, as TFDV uses them for drift and skew.

- categorical: L-infinity distance between the value shares, max_v |p(v) - q(v)|, in [0, 1];
- numbers: Jensen-Shannon divergence (base 2, in [0, 1]) between histograms on
  shared bins, the deciles of the reference sample (outer bins open-ended).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

BINS = 10


def linf(reference: "pd.Series", current: "pd.Series") -> tuple[float, object]:
    """(L-infinity distance, the value where it is largest); missing values are left out."""
    p = reference.dropna().value_counts(normalize=True)
    q = current.dropna().value_counts(normalize=True)
    index = p.index.union(q.index)
    diff = (p.reindex(index, fill_value=0.0) - q.reindex(index, fill_value=0.0)).abs()
    if diff.empty:
        return 0.0, None
    at = diff.idxmax()
    return float(diff[at]), at.item() if hasattr(at, "item") else at


def histograms(reference: "np.ndarray", current: "np.ndarray", bins: int = BINS) -> tuple["np.ndarray", "np.ndarray", "np.ndarray"]:
    """(inner edges, reference shares, current shares) on the reference's quantile bins."""
    import numpy as np

    ref = reference[~np.isnan(reference)]
    cur = current[~np.isnan(current)]
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1])) if len(ref) else np.array([])
    p = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1).astype(float)
    q = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1).astype(float)
    return edges, p / max(p.sum(), 1.0), q / max(q.sum(), 1.0)


def jensen_shannon(p: "np.ndarray", q: "np.ndarray") -> float:
    """Jensen-Shannon divergence, base 2, between two discrete distributions."""
    import numpy as np

    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


def numeric_js(reference: "np.ndarray", current: "np.ndarray", bins: int = BINS) -> float:
    _, p, q = histograms(reference, current, bins)
    return jensen_shannon(p, q)
