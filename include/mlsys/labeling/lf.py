"""Column labeling functions: one LF, two equal forms.

A ``ColumnLF`` is a Snorkel ``LabelingFunction`` (so ``PandasLFApplier``,
``DaskLFApplier`` and ``SparkLFApplier`` run it row by row) that also carries a
vectorised form over a whole column, which ``FastLFApplier`` runs instead.
Both forms give the same label on every row; the helpers below are built so:

    keyword_lf     any of some words in ``x.text.lower()``  -> substring search over the
                   Python-lowercased column (pyarrow.compute)
    regex_lf       ``re.search(pattern, x.text, flags)``    -> RE2 (pyarrow.compute) on rows where RE2
                   and Python ``re`` agree (ASCII text, plus U+FEFF), Python ``re`` on the others
    word_count_lf  ``len(x.text.split())`` in a range       -> pyarrow's whitespace split on rows
                   without non-ASCII whitespace, ``str.split`` on the others
    vectorized_lf  a decorator for your own ``f(df) -> labels``; its row form calls ``f`` on one row

Values that are not strings (None, NaN) make the vectorised form raise ``NullText``;
the applier then runs that LF row by row, so errors and fault tolerance behave as in Snorkel.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Iterable

from snorkel.labeling import LabelingFunction

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

ABSTAIN = -1

# Rows where RE2 (on the original text) may disagree with Python's `re` hold one of: \v or
# \x1c-\x1f (whitespace to Python, not to RE2), or a non-ASCII letter, digit or space, \x85, U+0345
# or a circled letter (word characters, spaces or cased letters to Python, case-folded by RE2).
# Every other row (ASCII text, emoji, symbols, marks, U+FEFF) reads the same to both engines;
# tests/labeling/test_lf.py checks this over every Unicode code point.
_RE2_UNSAFE = ("[\\x0b\\x1c-\\x1f\\x{85}\\x{345}\\x{24B6}-\\x{24E9}]|[^\\P{L}\\x00-\\x7f]|[^\\P{N}\\x00-\\x7f]"
               "|[^\\P{Z}\\x00-\\x7f]")
# Python's str.split() whitespace that pyarrow's ascii_split_whitespace does not split on.
_SPLIT_UNSAFE = "[\\x1c-\\x1f\\x{85}]|[^\\P{Z}\\x00-\\x7f]"
_RE_SPECIAL = set("\\.^$|?*+()[]{}")


class NullText(ValueError):
    """A column holds non-string values; the applier falls back to the row form for this LF."""


class Columns:
    """The frame an applier labels, with derived columns computed once and shared by all LFs."""

    def __init__(self, frame: "pd.DataFrame"):
        self.frame = frame
        self._cache: dict[tuple, object] = {}

    def _memo(self, key: tuple, make: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def strings(self, column: str) -> list:
        return self._memo(("list", column), lambda: self.frame[column].tolist())

    def arrow(self, column: str) -> "pa.Array":
        import pyarrow as pa

        def make():
            values = self.strings(column)
            try:
                arr = pa.array(values, type=pa.string())
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise NullText(f"column {column!r} holds non-string values") from exc
            if arr.null_count:
                raise NullText(f"column {column!r} holds {arr.null_count} missing values")
            return arr

        return self._memo(("arrow", column), make)

    def lower(self, column: str) -> "pa.Array":
        """The column lowercased exactly as ``str.lower`` does (pyarrow's own lower differs on rare letters)."""
        import pyarrow as pa

        def make():
            self.arrow(column)  # raises NullText first
            return pa.array([s.lower() for s in self.strings(column)], type=pa.string())

        return self._memo(("lower", column), make)

    def unsafe(self, column: str, kind: str) -> "np.ndarray":
        """Boolean mask of rows where the pyarrow form may differ from Python's (see the module doc)."""
        import pyarrow.compute as pc

        pattern = {"re2": _RE2_UNSAFE, "split": _SPLIT_UNSAFE}[kind]
        return self._memo(("unsafe", column, kind), lambda: pc.match_substring_regex(
            self.arrow(column), pattern).to_numpy(zero_copy_only=False))


class ColumnLF(LabelingFunction):
    """A labeling function with a row form ``f(x)`` and an equal column form ``vectorized(columns)``."""

    def __init__(self, name: str, f: Callable, vectorized: Callable[[Columns], Iterable[int]], columns=("text",)):
        super().__init__(name=name, f=f)
        self.vectorized = vectorized
        self.columns = tuple(columns)


def _labels(hit, label: int) -> "np.ndarray":
    import numpy as np

    return np.where(np.asarray(hit, dtype=bool), label, ABSTAIN).astype(np.int64)


def keyword_lf(name: str, words: Iterable[str], label: int, column: str = "text") -> ColumnLF:
    """Vote ``label`` when any of ``words`` occurs in the lowercased text (plain substring test)."""
    words = tuple(w.lower() for w in words)
    if not words:
        raise ValueError(f"keyword_lf {name!r}: give at least one word")

    def f(x):
        text = getattr(x, column).lower()
        return label if any(w in text for w in words) else ABSTAIN

    if all(w.isascii() for w in words):
        # On ASCII text, "w in s.lower()" for an ASCII word is a case-insensitive literal search: one RE2 pass.
        pattern = "|".join("".join("\\" + c if c in _RE_SPECIAL else c for c in w) for w in words)
    else:
        pattern = None

    def vectorized(cols: Columns):
        import numpy as np
        import pyarrow.compute as pc

        strings = cols.strings(column)
        if pattern is None:
            low = cols.lower(column)
            hit = np.zeros(len(low), dtype=bool)
            for w in words:
                hit |= pc.match_substring(low, w).to_numpy(zero_copy_only=False)
            return _labels(hit, label)
        hit = pc.match_substring_regex(cols.arrow(column), pattern, ignore_case=True)
        hit = hit.to_numpy(zero_copy_only=False).copy()
        for i in np.flatnonzero(cols.unsafe(column, "re2")):
            text = strings[i].lower()
            hit[i] = any(w in text for w in words)
        return _labels(hit, label)

    return ColumnLF(name, f, vectorized, (column,))


def _search_column(cols: Columns, column: str, pattern: str, flags: int) -> "np.ndarray":
    """``[re.search(pattern, s, flags) is not None for s in column]``, with RE2 wherever it agrees."""
    return cols._memo(("search", column, pattern, flags), lambda: _search(cols, column, pattern, flags))


def _search(cols: Columns, column: str, pattern: str, flags: int) -> "np.ndarray":
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rx = re.compile(pattern, flags)
    arr, strings = cols.arrow(column), cols.strings(column)
    if not pattern.isascii() or flags & ~(re.IGNORECASE | re.UNICODE):
        return np.array([rx.search(s) is not None for s in strings], dtype=bool)
    try:
        hit = pc.match_substring_regex(arr, pattern, ignore_case=bool(flags & re.IGNORECASE))
    except pa.ArrowInvalid:  # not RE2 syntax (lookaround, backreference): Python re on every row
        return np.array([rx.search(s) is not None for s in strings], dtype=bool)
    hit = hit.to_numpy(zero_copy_only=False).copy()
    unsafe = cols.unsafe(column, "re2")
    if "$" in pattern:  # Python's `$` also matches before a final newline, RE2's only at the very end
        unsafe = unsafe | pc.match_substring(arr, "\n").to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(unsafe):
        hit[i] = rx.search(strings[i]) is not None
    return hit


def regex_lf(name: str, pattern: str, label: int, column: str = "text", flags: int = re.IGNORECASE,
             unless: str | None = None) -> ColumnLF:
    """Vote ``label`` when ``re.search(pattern, text, flags)`` matches and ``unless`` (if given) does not."""
    rx = re.compile(pattern, flags)
    ux = re.compile(unless, flags) if unless else None

    def f(x):
        text = getattr(x, column)
        return label if rx.search(text) and not (ux and ux.search(text)) else ABSTAIN

    def vectorized(cols: Columns):
        hit = _search_column(cols, column, pattern, flags)
        if unless:
            hit = hit & ~_search_column(cols, column, unless, flags)
        return _labels(hit, label)

    return ColumnLF(name, f, vectorized, (column,))


def word_count_lf(name: str, label: int, max_words: int | None = None, min_words: int | None = None,
                  column: str = "text", unless: str | None = None, flags: int = re.IGNORECASE) -> ColumnLF:
    """Vote ``label`` when ``min_words <= len(text.split()) <= max_words`` (either bound may be None)
    and the regex ``unless`` (if given) does not match."""
    lo = -1 if min_words is None else min_words
    hi = float("inf") if max_words is None else max_words
    ux = re.compile(unless, flags) if unless else None

    def f(x):
        text = getattr(x, column)
        return label if lo <= len(text.split()) <= hi and not (ux and ux.search(text)) else ABSTAIN

    def vectorized(cols: Columns):
        import numpy as np
        import pyarrow.compute as pc

        strings = cols.strings(column)
        trimmed = pc.ascii_trim_whitespace(cols.arrow(column))
        n = pc.list_value_length(pc.ascii_split_whitespace(trimmed)).to_numpy(zero_copy_only=False).copy()
        n[pc.equal(trimmed, "").to_numpy(zero_copy_only=False)] = 0  # "".split() == []
        for i in np.flatnonzero(cols.unsafe(column, "split")):
            n[i] = len(strings[i].split())
        hit = (n >= lo) & (n <= hi)
        if unless:
            hit = hit & ~_search_column(cols, column, unless, flags)
        return _labels(hit, label)

    return ColumnLF(name, f, vectorized, (column,))


def vectorized_lf(name: str | None = None, columns: Iterable[str] = ("text",)):
    """Decorate ``f(df) -> array of labels`` (one per row, -1 to abstain) to make it a labeling function.

    The row form (for Snorkel's appliers) calls ``f`` on a one-row DataFrame: correct, not fast.
    """

    def wrap(fn: Callable[["pd.DataFrame"], Iterable[int]]) -> ColumnLF:
        def f(x):
            import pandas as pd

            row = x.to_dict() if hasattr(x, "to_dict") else dict(x)
            return int(list(fn(pd.DataFrame([row])))[0])

        def vectorized(cols: Columns):
            import numpy as np

            out = np.asarray(fn(cols.frame))
            if out.shape != (len(cols.frame),):
                raise ValueError(f"vectorised LF {name or fn.__name__!r} returned shape {out.shape}; "
                                 f"return one label per row, shape ({len(cols.frame)},)")
            return out.astype(np.int64)

        return ColumnLF(name or fn.__name__, f, vectorized, columns)

    return wrap
