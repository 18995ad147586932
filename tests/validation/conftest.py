"""Real Chicago taxi data for the validation tests: the full file, two random halves (spans), and its schema."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

TAXI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "chicago-taxi" / "data.csv"


@pytest.fixture(scope="session")
def taxi(tmp_path_factory):
    """The real taxi trips; ``previous``/``current`` are two random halves (two spans of the same process)."""
    from mlsys.storage.table_file import read_table
    from mlsys.validation import statistics
    from mlsys.validation.infer import infer

    if not TAXI.is_file():
        pytest.fail(f"the Chicago taxi data is missing at {TAXI}")
    root = tmp_path_factory.mktemp("taxi")
    full = pd.read_csv(TAXI)
    previous = full.sample(frac=0.5, random_state=0)
    current = full.drop(previous.index)
    previous.to_csv(root / "previous.csv", index=False)
    current.to_csv(root / "current.csv", index=False)
    stats = statistics.compute(read_table(TAXI))
    schema = infer(stats, "chicago_taxi", label="tips")
    return SimpleNamespace(full=full, previous=previous.reset_index(drop=True), current=current.reset_index(drop=True),
                           stats=stats, schema=schema, root=root)
