"""label: labeling functions + a gold-aware label model -> weighted probabilistic labels.

    lf           ColumnLF and its helpers (keyword_lf, regex_lf, word_count_lf, vectorized_lf)
    applier      FastLFApplier: Snorkel's label matrix, vectorised and parallel
    label_model  GoldAwareLabelModel: majority vote / LabelModel / gold-weighted vote, chosen on gold
    labeler      label_frame: the Python API (DataFrame in, labeled DataFrame + report out)
    analysis     the LF table and plots logged to MLflow
    stage        the label stage (LabelSpec, run), store and file modes
    (``mlsys bench label`` and ``label_quality`` live in ``mlsys.bench``)
"""

from __future__ import annotations

import importlib
from typing import Any

# Names load lazily: the DAG processor reads LabelSpec's knobs without importing Snorkel or pandas.
_EXPORTS = {
    "FastLFApplier": "applier", "LFError": "applier", "LabelReport": "labeler", "label_frame": "labeler",
    "GoldAwareLabelModel": "label_model", "ColumnLF": "lf", "keyword_lf": "lf", "regex_lf": "lf",
    "vectorized_lf": "lf", "word_count_lf": "lf", "LabelResult": "stage", "LabelSpec": "stage", "load_lfs": "stage",
    "run": "stage",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
