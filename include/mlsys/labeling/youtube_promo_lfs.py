"""The YouTube LFs that recognise spam only: the shape of many users' first LF set.

LFs written for the rare class fire mostly on it and abstain on most of the rest,
so the rows they cover are a biased sample of the corpus and the rows they leave
uncovered are mostly the other class. ``mlsys bench label_quality --lfs
mlsys.labeling.youtube_promo_lfs --positive-share 0.13`` measures how the end
model copes (docs/labeling.md).
"""

from mlsys.labeling.youtube_lfs import lfs as _all

SPAM_LFS = ("check_out", "subscribe", "link", "my_channel", "my", "channel", "please", "like_this_comment", "social",
            "share_visit", "money", "phone_number", "self_promo", "want_views")
lfs = [lf for lf in _all if lf.name in SPAM_LFS]
LFS = lfs
