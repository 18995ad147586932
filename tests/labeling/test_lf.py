"""Column LFs: the vectorised form gives the row form's label on every row, Unicode corner cases included."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mlsys.labeling import youtube_lfs
from mlsys.labeling.lf import (
    _RE2_UNSAFE,
    _SPLIT_UNSAFE,
    ColumnLF,
    Columns,
    NullText,
    keyword_lf,
    regex_lf,
    vectorized_lf,
    word_count_lf,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "youtube-spam"

# Strings where Python's re / str.lower / str.split and pyarrow's RE2 / whitespace split differ.
TRICKY = [
    "", " ", "free", "FREE money", "éfree", "free\u00e9", "Kelvin \u212a", "\u017fubscribe", "İt is FREE",
    "a\vb", "a\x1cb c", "a\x1fb", "a\u00a0b", "a\u2003b c", "x\u3000y", "\ufefflove this song\ufeff",
    "song\n", "end song", "check   it   out", "CHECK OUT my channel", "check\u0301 out", "\u24b8heck out",
    "١٢٣٤٥٦٧٨٩٠١", "my\u0345 channel", "love ❤️ this", "日本語 song", "  leading and trailing  ",
    "http://x.com", "win $$$", "\u0130stanbul free", "ﬁrst song", "ß subscribe",
]

SAMPLE_LFS = [
    keyword_lf("kw", ["free", "ß", "ﬁ", "k"], 1),
    keyword_lf("kw_non_ascii", ["é", "日本"], 0),
    regex_lf("rx_word", r"\bfree\b|\bsong$", 1),
    regex_lf("rx_class", r"[a-z]\s+[a-z]|\w\W\w", 0),
    regex_lf("rx_unless", r"song|love", 0, unless=r"check|\bmy\b"),
    regex_lf("rx_lookahead", r"check(?=\s+out)", 1),  # not RE2: Python on every row
    regex_lf("rx_case", r"CHECK", 1, flags=0),
    regex_lf("rx_digits", r"\d{5,}", 1),
    word_count_lf("wc_short", 0, max_words=2),
    word_count_lf("wc_range", 1, min_words=3, max_words=4, unless="song"),
]


def _row_labels(lf, texts):
    return np.array([lf(SimpleNamespace(text=t)) for t in texts])


@pytest.mark.parametrize("lf", SAMPLE_LFS, ids=lambda lf: lf.name)
def test_vectorised_form_equals_row_form_on_tricky_text(lf):
    cols = Columns(pd.DataFrame({"text": TRICKY}))
    assert np.array_equal(np.asarray(lf.vectorized(cols)), _row_labels(lf, TRICKY))


def test_shipped_lfs_agree_on_the_real_corpus_and_tricky_text():
    texts = pd.concat([pd.read_csv(f)["CONTENT"] for f in sorted(DATA.glob("*.csv"))]).tolist() + TRICKY
    cols = Columns(pd.DataFrame({"text": texts}))
    for lf in youtube_lfs.lfs:
        assert np.array_equal(np.asarray(lf.vectorized(cols)), _row_labels(lf, texts)), lf.name


def test_the_unsafe_row_patterns_cover_every_code_point_python_treats_specially():
    """A row is sent to Python whenever it holds a character RE2/pyarrow might read differently."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    re2 = pc.match_substring_regex(pa.array(chars), _RE2_UNSAFE).to_numpy(zero_copy_only=False)
    split = pc.match_substring_regex(pa.array(chars), _SPLIT_UNSAFE).to_numpy(zero_copy_only=False)
    word, space = re.compile(r"\w"), re.compile(r"\s")
    for c, flagged, split_flagged in zip(chars, re2, split):
        if c.isascii():
            assert flagged == (c in "\x0b\x1c\x1d\x1e\x1f"), repr(c)
            assert split_flagged == (c in "\x1c\x1d\x1e\x1f"), repr(c)
            continue
        special = (word.match(c) or space.match(c) or c.lower() != c or c.upper() != c or c.casefold() != c)
        if special:
            assert flagged, f"U+{ord(c):04X} is special to Python's re but not sent to it"
        if c.isspace():
            assert split_flagged, f"U+{ord(c):04X} is whitespace to str.split but not sent to it"


def test_missing_text_raises_null_text_in_the_column_form():
    lf = keyword_lf("kw", ["free"], 1)
    with pytest.raises(NullText, match="non-string|missing"):
        lf.vectorized(Columns(pd.DataFrame({"text": ["free", None]})))


def test_vectorized_lf_decorator_gives_both_forms():
    @vectorized_lf()
    def long_text(df):
        return np.where(df["text"].str.len() > 10, 1, -1)

    assert isinstance(long_text, ColumnLF) and long_text.name == "long_text"
    texts = ["short", "a much longer text"]
    assert long_text.vectorized(Columns(pd.DataFrame({"text": texts}))).tolist() == [-1, 1]
    assert [long_text(pd.Series({"text": t})) for t in texts] == [-1, 1]


def test_vectorized_lf_with_the_wrong_shape_is_an_error():
    @vectorized_lf(name="bad")
    def bad(df):
        return [1]

    with pytest.raises(ValueError, match=r"'bad' returned shape \(1,\); return one label per row, shape \(2,\)"):
        bad.vectorized(Columns(pd.DataFrame({"text": ["a", "b"]})))


def test_keyword_lf_needs_words():
    with pytest.raises(ValueError, match="at least one word"):
        keyword_lf("none", [], 1)
