"""Fixtures for the end-to-end tests that run a real Airflow cluster."""

from __future__ import annotations

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item, so fixtures can see whether the test failed.
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def show_cluster_logs_on_failure(request):
    """Register clusters here; their component logs are printed if the test fails."""
    clusters = []
    yield clusters.append
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for cluster in clusters:
            print(f"\n##### Airflow cluster logs ({cluster.home}) #####\n{cluster.format_logs(lines=150)}")
