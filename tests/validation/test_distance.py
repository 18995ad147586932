"""Drift and skew distances: L-infinity for categories, Jensen-Shannon divergence for numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsys.validation import distance


def test_linf_is_the_largest_share_difference():
    value, at = distance.linf(pd.Series(["a"] * 50 + ["b"] * 50), pd.Series(["a"] * 80 + ["b"] * 10 + ["c"] * 10 + [None] * 5))
    # shares: a .5 -> .8, b .5 -> .1, c 0 -> .1 (missing values left out)
    assert value == pytest.approx(0.4) and at == "b"
    assert distance.linf(pd.Series(["a", "b"]), pd.Series(["b", "a"]))[0] == 0.0


def test_jensen_shannon_bounds():
    p = np.array([0.5, 0.5, 0.0])
    assert distance.jensen_shannon(p, p) == 0.0
    assert distance.jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


def test_numeric_js_on_real_spans(taxi):
    prev, cur = taxi.previous.fare.to_numpy(float), taxi.current.fare.to_numpy(float)
    assert distance.numeric_js(prev, cur) < 0.01  # two random halves: no drift
    assert distance.numeric_js(prev, cur * 1.3 + 4) > 0.1  # a shifted fare distribution
