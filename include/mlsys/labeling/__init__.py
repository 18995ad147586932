"""label: labeling functions + a gold-aware label model -> weighted probabilistic labels.

    lf           ColumnLF and its helpers (keyword_lf, regex_lf, word_count_lf, vectorized_lf)
    applier      FastLFApplier: Snorkel's label matrix, vectorised and parallel
    label_model  GoldAwareLabelModel: majority vote / LabelModel / gold-weighted vote, chosen on gold
    labeler      label_frame: the Python API (DataFrame in, labeled DataFrame + report out)
    analysis     the LF table and plots logged to MLflow
    stage        the label stage (LabelSpec, run), store and file modes
    (``mlsys bench label`` and ``label_quality`` live in ``mlsys.bench``)
"""

from mlsys.labeling.applier import FastLFApplier, LFError
from mlsys.labeling.labeler import LabelReport, label_frame
from mlsys.labeling.label_model import GoldAwareLabelModel
from mlsys.labeling.lf import ColumnLF, keyword_lf, regex_lf, vectorized_lf, word_count_lf
from mlsys.labeling.stage import LabelResult, LabelSpec, load_lfs, run

__all__ = [
    "ColumnLF", "FastLFApplier", "GoldAwareLabelModel", "LFError", "LabelReport", "LabelResult", "LabelSpec",
    "keyword_lf", "label_frame", "load_lfs", "regex_lf", "run", "vectorized_lf", "word_count_lf",
]
