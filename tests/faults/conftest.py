"""Fixtures of the fault-injection suite: one uninterrupted run of the pipeline that every scenario compares with."""

from __future__ import annotations

import pytest
from tests.faults.stack_state import pipeline


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory) -> dict:
    """The nightly pipeline through airflow standalone with no fault: ``state``, ``tries``, ``task_instances``.

    Its dicts are read once, when it finishes; ``test_cleared_old_run`` goes on from its ``home`` afterwards
    (the clean run is that scenario's run A), which changes the folder but none of what is returned here.
    """
    return pipeline(tmp_path_factory.mktemp("clean-home"), ())
