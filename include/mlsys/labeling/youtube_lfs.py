"""The YouTube spam labeling functions: the example LF set (after Snorkel's spam tutorial).

An LF set is any importable module with a module-level ``LFS`` list. Point the
label stage at your own with ``mlsys label --lfs my_pkg.my_lfs``.
"""

import re

from snorkel.labeling import labeling_function

ABSTAIN, HAM, SPAM = -1, 0, 1


@labeling_function()
def keyword_my(x):
    """Spam often talks about 'my channel', 'my video'."""
    return SPAM if "my" in x.text.lower() else ABSTAIN


@labeling_function()
def keyword_subscribe(x):
    return SPAM if "subscribe" in x.text.lower() else ABSTAIN


@labeling_function()
def keyword_link(x):
    return SPAM if "http" in x.text.lower() else ABSTAIN


@labeling_function()
def keyword_please(x):
    return SPAM if any(w in x.text.lower() for w in ("please", "plz")) else ABSTAIN


@labeling_function()
def keyword_song(x):
    """Comments about the song itself are usually genuine."""
    return HAM if "song" in x.text.lower() else ABSTAIN


@labeling_function()
def regex_check_out(x):
    return SPAM if re.search(r"check.*out", x.text, flags=re.I) else ABSTAIN


@labeling_function()
def keyword_channel(x):
    return SPAM if "channel" in x.text.lower() else ABSTAIN


@labeling_function()
def short_comment(x):
    """Genuine reactions are short: 'love it', 'so good'."""
    return HAM if len(x.text.split()) < 5 else ABSTAIN


@labeling_function()
def keyword_love(x):
    return HAM if re.search(r"\blove\b", x.text, flags=re.I) and "my" not in x.text.lower() else ABSTAIN


@labeling_function()
def many_caps_or_money(x):
    """Money talk and shouting: giveaways, 'FREE', '$$$'."""
    return SPAM if re.search(r"\$|\bfree\b|\bmoney\b|\bwin\b", x.text, flags=re.I) else ABSTAIN


LFS = [
    keyword_my,
    keyword_subscribe,
    keyword_link,
    keyword_please,
    keyword_song,
    regex_check_out,
    keyword_channel,
    short_comment,
    keyword_love,
    many_caps_or_money,
]
