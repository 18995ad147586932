"""The YouTube spam labeling functions: the example LF set (after Snorkel's spam tutorial).

An LF set is any importable module with a module-level list ``lfs`` (or ``LFS``).
Point the label stage at your own with ``mlsys label --lfs my_pkg.my_lfs``.

Every LF here is a ``ColumnLF`` (see ``mlsys.labeling.lf``): Snorkel's appliers run
it row by row, ``FastLFApplier`` runs it over the whole column, same labels.
Spam LFs look for self-promotion; ham LFs look for talk about the video and vote
only when no promotion marker (``PROMO``) is present. Written and tuned on four
videos; the fifth (Shakira) is the held-out test split.
"""

from mlsys.labeling.lf import keyword_lf, regex_lf, word_count_lf

ABSTAIN, HAM, SPAM = -1, 0, 1

# Markers of self-promotion; ham LFs stay silent on any comment that has one.
PROMO = (r"check|subscri|\bsub\b|channel|https?:|www|\.com|please|plz|\bmy\b|\bme\b|follow|visit|free|money"
         r"|\bi'?m\b|\bour\b|like this comment")
PROMO_WIDE = PROMO + r"|share|\bvisit\b|\bgo to\b|instagram|twitter|facebook|\$|\bwin\b|\d{5,}"

lfs = [
    # spam: self-promotion
    regex_lf("check_out", r"check\W*(it\W*)?out|check\s+(my|this|me)", SPAM),
    keyword_lf("subscribe", ["subscri", "sub to", "sub4sub", "suscri"], SPAM),
    regex_lf("link", r"https?:|www\.|\.com\b|\.net\b|\.org\b|\.ly\b|youtu\.?be|\bbit\.ly", SPAM),
    regex_lf("my_channel", r"\bmy\s+(new\s+)?(channel|video|vid|song|music|page|cover|youtube|account|first|rap"
                           r"|mixtape|blog)", SPAM),
    regex_lf("my", r"\bmy\b", SPAM),
    keyword_lf("channel", ["channel", "canal"], SPAM),
    regex_lf("please", r"\bplease\b|\bplz\b|\bpls\b", SPAM),
    regex_lf("like_this_comment", r"\blike\s+this\s+comment|thumbs?\s+up\s+(if|so)|\blike\s+if\b", SPAM),
    regex_lf("social", r"\bfollow\s+me|instagram|twitter|facebook|\bfb\b|snapchat|\bkik\b", SPAM),
    regex_lf("share_visit", r"\bshare\b|\bvisit\b|\bgo\s+to\b|take\s+a\s+look|\bsearch\b|\bgoogle\b", SPAM),
    regex_lf("money", r"\$|\bfree\b|\bmoney\b|\bwin\b|\bcash\b|\bearn|\bprize|\bgift\s*card|\bpaypal|\bamazon\b"
                      r"|\bdollars?\b|\bbusiness\b|\bjob\b", SPAM),
    regex_lf("phone_number", r"\+?\d[\d\s\-]{8,}\d", SPAM),
    regex_lf("self_promo", r"\b(i|we)\s+(make|made|am making|just started|upload|post|sing|rap)\b"
                           r"|\bi'?m\s+(a|an)\s+(new\s+)?(singer|rapper|youtuber|artist)", SPAM),
    regex_lf("want_views", r"\b(views|viewers|fans|subscribers|likes)\b.*\b(need|want|help|get|gain)"
                           r"|\b(help|support)\s+me\b", SPAM),
    # ham: talk about the song, the singer, the video -- without any promotion marker
    regex_lf("song", r"\bsongs?\b", HAM, unless=PROMO),
    regex_lf("love", r"\blove\b", HAM, unless=PROMO),
    regex_lf("praise", r"\b(best|awesome|amazing|great|beautiful|nice|cool|good|perfect|legend|catchy|epic"
                       r"|favorite|favourite)\b", HAM, unless=PROMO),
    regex_lf("views_and_years", r"\bbillion\b|\bviews\b|\b20(14|15|16)\b", HAM, unless=PROMO),
    regex_lf("laughter", r"\blol\b|\bhaha|\blmao\b|\bxd\b|:\)|:d\b|<3", HAM, unless=PROMO),
    regex_lf("artist_name", r"\b(shakira|katy|perry|eminem|rihanna|psy|lmfao|gangnam|shuffle|waka)\b", HAM,
             unless=PROMO),
    word_count_lf("short_comment", HAM, max_words=5, unless=PROMO),
    regex_lf("question", r"\b(who|what|why|how|when)\b.*\?", HAM, unless=PROMO),
    regex_lf("no_promotion", r"[a-z]", HAM, unless=PROMO_WIDE),
]

LFS = lfs  # the name the label stage used first; both work
