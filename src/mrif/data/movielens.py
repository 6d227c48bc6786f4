"""Line parsers for the GroupLens MovieLens rating files (Harper and Konstan, TiiS 2015).

* ``movielens-dat``: ``ratings.dat`` of MovieLens 1M and 10M,
  ``UserID::MovieID::Rating::Timestamp`` with unix seconds, no header.
* ``movielens-udata``: ``u.data`` of MovieLens 100K (and its ``u1.base`` ... ``ub.test``
  splits), tab-separated ``user item rating timestamp`` with unix seconds, no header.

The larger releases' ``ratings.csv`` files have a header (``userId,movieId,rating,timestamp``)
and are read as ordinary tables (``fmt='csv'`` with ``user_col='userId'`` and so on).
"""

from __future__ import annotations

from mrif.data.lines import Row, parse_row, split_fields

DAT_FIELDS = ("UserID", "MovieID", "Rating", "Timestamp")
UDATA_FIELDS = ("user", "item", "rating", "timestamp")


def parse_dat_line(text: str) -> Row:
    """``UserID::MovieID::Rating::Timestamp``."""
    user, item, rating, seconds = split_fields(text, "::", DAT_FIELDS)
    return parse_row(user, item, rating, seconds)


def parse_udata_line(text: str) -> Row:
    """``user<TAB>item<TAB>rating<TAB>timestamp``."""
    user, item, rating, seconds = split_fields(text, "\t", UDATA_FIELDS)
    return parse_row(user, item, rating, seconds)
