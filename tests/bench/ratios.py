"""What every benchmark test checks of a report: each ratio is recomputed from the repetitions' timed fields."""

from __future__ import annotations

import statistics
from typing import Callable

import pytest


def check_ratios(result: dict, formulas: dict[str, Callable[[dict], float]]) -> None:
    """Every ratio's values, median and range are those of the repetitions' timed fields (``runs``)."""
    assert len(result["runs"]) == result["repeat"] == len(result["load_average"])
    for name, formula in formulas.items():
        values = [formula(r) for r in result["runs"]]
        assert result["ratios"][name]["values"] == pytest.approx(values, rel=2e-3, abs=1e-3), name
        assert result["median"][name] == pytest.approx(statistics.median(values), rel=2e-3, abs=1e-3), name
        assert result["range"][name] == pytest.approx([min(values), max(values)], rel=2e-3, abs=1e-3), name
