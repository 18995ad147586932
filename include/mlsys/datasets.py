"""Dataset names, registry aliases and column contracts: what stages hand each other, in one place.

    ingest    -> UNLABELED, GOLD, TEST             (one snapshot of series COMMENTS per ingest, plus
                 INGEST_QUARANTINE when rows were set aside; resolve a split through the snapshot)
    label     -> LABELED  (LABELED_COLUMNS)        trainable rows: weight > 0, see trainable()
    batch     -> PREDICTIONS (or PREDICTION_SHARDS, merged into PREDICTIONS)
    stream    -> VIDEO_PREDICTIONS_PREFIX + <stream>
    evaluate  -> the registered model's aliases CHALLENGER (newest) and CHAMPION (best so far)

Stages import these names from here, never from each other.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

_PLAIN_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")  # fits int64; no "+", no leading zero: "007" stays text

UNLABELED, GOLD, TEST = "comments_unlabeled", "comments_gold", "comments_test"
COMMENTS = "comments"  # the snapshot series of an ingest: comments@latest names its three splits
INGEST_QUARANTINE = "comments_ingest_quarantine"  # rows ingest set aside, with a `reason` each
LABELED = "comments_labeled"
PREDICTIONS = "predictions"
PREDICTION_SHARDS = "predictions_shards"
VIDEO_PREDICTIONS_PREFIX = "video_predictions_"

CHAMPION, CHALLENGER = "champion", "challenger"

CARDINALITY = 2  # classes of the labeled datasets (ham = 0, spam = 1)
LABELED_COLUMNS = ["id", "group", "text", "label", "label_proba", "label_source", "weight"]


def trainable(labeled: "pd.DataFrame") -> "pd.DataFrame":
    """The rows of a labeled dataset that may train a model: a positive weight and a label (gold or weak)."""
    return labeled[(labeled["weight"] > 0) & (labeled["label_source"] != "unlabeled")].reset_index(drop=True)


def typed_ids(ids: "pd.Series") -> "pd.Series":
    """Ids read as text, back as int64 when every one is a plainly written integer, else as they are.

    Ids are read as text (so "007" and "7" stay two ids, and a missing id is seen as missing);
    this gives an integer-keyed input its integers back, so every output joins to the user's table.
    """
    text = ids.astype(str)
    if len(text) and ids.notna().all() and text.map(lambda v: _PLAIN_INT.fullmatch(v) is not None).all():
        return text.astype("int64")
    return ids
