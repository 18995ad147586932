"""label: labeling functions + Snorkel LabelModel + expert gold -> weighted probabilistic labels."""

from mlsys.labeling.stage import LabelResult, LabelSpec, load_lfs, run

__all__ = ["LabelResult", "LabelSpec", "load_lfs", "run"]
