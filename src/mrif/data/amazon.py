"""Line parsers for the published Amazon review dumps (McAuley et al. 2014 and 2018; Hou et
al. 2023). Each file holds one record per line and no header.

* ``amazon-ratings``: the 2014 "ratings only" CSVs (``ratings_Electronics.csv``), fields
  ``user,item,rating,timestamp`` with unix seconds, e.g.
  ``A1YJEY40YUW4SE,7806397051,1.0,1395651600``. No quoting: the published ids hold no
  commas. The 2018 ratings-only CSVs are documented as (item, user, rating, timestamp), item
  first, so they are not this layout.
* ``amazon-reviews``: the 2014 and 2018 review files (``reviews_Electronics_5.json``,
  ``Electronics_5.json``), one object per line; ``reviewerID`` is the user, ``asin`` the
  item, ``overall`` the rating and ``unixReviewTime`` the time in unix seconds. Other keys
  (review text, votes, images) are ignored. Some 2014 files hold a Python dict literal per
  line instead of JSON (single quotes, ``True``/``False``): a line that JSON rejects is read
  with ``ast.literal_eval``, which builds literals and never runs code.
* ``amazon-2023``: the 2023 release (``Electronics.jsonl``), one JSON object per line with
  ``user_id``, ``parent_asin`` (the item; variants of one product share it), ``rating`` and
  ``timestamp`` in **milliseconds**. Timestamps are converted to whole unix seconds
  (floored), so two events of one user in the same second keep their file order (rule 2).
  A value below 1e11 ms (before March 1973) is refused as probably already in seconds.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from mrif.data.checks import MAX_TIMESTAMP, MIN_TIMESTAMP
from mrif.data.lines import (
    BadLine,
    Row,
    parse_id,
    parse_rating,
    parse_row,
    parse_whole_number,
    split_fields,
)

RATINGS_FIELDS = ("user", "item", "rating", "timestamp")
REVIEW_KEYS = {"user": "reviewerID", "item": "asin", "rating": "overall", "time": "unixReviewTime"}
REVIEW_2023_KEYS = {
    "user": "user_id",
    "item": "parent_asin",
    "rating": "rating",
    "time": "timestamp",
}
_MIN_2023_MS = 100_000_000_000  # 1973-03-03 in milliseconds
_JSON_LAYOUTS = {"amazon-reviews": REVIEW_KEYS, "amazon-2023": REVIEW_2023_KEYS}


def parse_ratings_line(text: str) -> Row:
    """``user,item,rating,timestamp`` of the 2014 ratings-only CSVs.

    >>> parse_ratings_line("A1YJEY40YUW4SE,7806397051,1.0,1395651600")
    ('A1YJEY40YUW4SE', '7806397051', 1.0, 1395651600)
    """
    user, item, rating, seconds = split_fields(text, ",", RATINGS_FIELDS)
    return parse_row(user, item, rating, seconds)


def parse_review_line(text: str) -> Row:
    """One 2014/2018 review: a JSON object, or a Python dict literal where JSON fails."""
    record = _load_record(text, python_literals=True)
    user, item, rating, seconds = _fields(record, "amazon-reviews")
    return parse_row(user, item, rating, seconds)


def parse_review_2023_line(text: str) -> Row:
    """One 2023 review (strict JSON); its millisecond timestamp becomes whole seconds.

    >>> parse_review_2023_line(
    ...     '{"user_id": "AG1", "asin": "B2", "parent_asin": "B1", "rating": 4.0, '
    ...     '"timestamp": 1588687728923, "verified_purchase": true}'
    ... )
    ('AG1', 'B1', 4.0, 1588687728)
    """
    record = _load_record(text, python_literals=False)
    user, item, rating, millis = _fields(record, "amazon-2023")
    ms = parse_whole_number(millis, "timestamp")
    if not MIN_TIMESTAMP * 1000 <= ms < MAX_TIMESTAMP * 1000:
        raise BadLine(
            f"timestamp out of range (milliseconds must be in [{MIN_TIMESTAMP * 1000}, "
            f"{MAX_TIMESTAMP * 1000}), 1970 to 2100 UTC): {ms}"
        )
    if ms < _MIN_2023_MS:
        raise BadLine(
            f"timestamp {ms} is before March 1973 in milliseconds; it looks like seconds, "
            "but the amazon-2023 layout stores milliseconds"
        )
    return parse_id(user, "user"), parse_id(item, "item"), parse_rating(rating), ms // 1000


def json_layout(text: str) -> str:
    """``amazon-reviews`` or ``amazon-2023``: the layout whose keys the line's record has."""
    record = _load_record(text, python_literals=True)
    for fmt, keys in _JSON_LAYOUTS.items():
        if all(key in record for key in keys.values()):
            return fmt
    expected = " or ".join(
        f"{fmt} ({', '.join(keys.values())})" for fmt, keys in _JSON_LAYOUTS.items()
    )
    found = ", ".join(map(str, record)) or "none"
    raise BadLine(f"cannot tell the JSON layout: expected the keys of {expected}; found {found}")


def _load_record(text: str, *, python_literals: bool) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        if not python_literals:
            raise BadLine(f"not a JSON object ({err})") from None
        try:
            record = ast.literal_eval(text.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            reason = f"neither a JSON object nor a Python dict literal (JSON: {err})"
            raise BadLine(reason) from None
    if not isinstance(record, dict):
        raise BadLine(f"expected one object per line; got a {type(record).__name__}")
    return record


def _fields(record: dict[str, Any], fmt: str) -> list[Any]:
    """Values of the layout's user, item, rating and time keys, in that order."""
    keys = _JSON_LAYOUTS[fmt]
    missing = [key for key in keys.values() if key not in record]
    if missing:
        found = ", ".join(map(str, record)) or "none"
        hint = ""
        for other, other_keys in _JSON_LAYOUTS.items():
            if other != fmt and all(key in record for key in other_keys.values()):
                hint = f"; these are the keys of the {other} layout (fmt='{other}')"
        raise BadLine(f"missing key(s) {', '.join(map(repr, missing))}; keys found: {found}{hint}")
    return [record[key] for key in keys.values()]
