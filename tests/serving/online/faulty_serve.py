"""``mlsys serve`` whose model fails on one input, for the server's error-path tests.

    python faulty_serve.py serve --port 8000 ...   (the arguments of ``mlsys serve``)

A batch holding the text ``FAIL_TEXT`` raises inside the model, as a corrupt
weight or an unexpected shape would; every other batch scores normally.
"""

import sys

from mlsys.cli import main
from mlsys.serving.scorer import Scorer

FAIL_TEXT = "__fail_inside_the_model__"
_score_texts = Scorer.score_texts


def _failing(self, texts):
    if FAIL_TEXT in texts:
        raise RuntimeError("the model failed on purpose (a test fault)")
    return _score_texts(self, texts)


if __name__ == "__main__":
    Scorer.score_texts = _failing
    sys.exit(main(sys.argv[1:]))
