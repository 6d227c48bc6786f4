"""Timestamp columns of interaction tables as unix seconds, written as lazy polars expressions.

A column is read one of these ways (``TimeKind``), chosen before the scan from its dtype and,
for text, from its first value that reads as a number or an ISO-8601 datetime:

* ``int`` / ``float``: a numeric column; integers are whole seconds, floats Float64 seconds.
* ``temporal``: a Date or Datetime column (Parquet); microseconds since the epoch.
* ``text-int``: text holding unix seconds, tried as whole numbers first. A value that reads
  only as a fractional number is flagged ``fractional``, and the scan is repeated as
  ``text-float``, so one such value turns the whole column into Float64 seconds.
* ``text-float``: text holding unix seconds, any number.
* ``iso``: text holding ISO-8601 dates or datetimes (naive ones are taken as UTC); microseconds
  since the epoch. Only ISO-8601 is accepted: an inferred pattern could read ``01/02/2020`` day
  first and silently mis-sort a month-first file.

Whole seconds are kept as UInt32 (``WHOLE_SECONDS``): the accepted range ends before 2**32,
so they take half the memory of Int64 through the scan, the k-core and the sort; the readers'
public frame widens them to Int64 again. The microsecond kinds become seconds after the scan
(``micros_to_seconds``): whole seconds when every value is one, Float64 otherwise.

Every kind yields the checks that fail a row (an empty value, an unparsable one, one outside
``checks.TIMESTAMP_RANGE``) as boolean expressions, so a bad row is found in the same pass
that parses the good ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import polars as pl

from mrif.data.checks import MAX_TIMESTAMP, MIN_TIMESTAMP

TimeKind = Literal["int", "float", "temporal", "text-int", "text-float", "iso"]
WHOLE_SECONDS = pl.UInt32  # MAX_TIMESTAMP < 2**32
MICROSECOND_KINDS = ("temporal", "iso")
UNPARSABLE = {  # the reason quoted for a value that ``unparsable`` flags
    "int": "unparsable timestamp",
    "float": "unparsable timestamp",
    "temporal": "unparsable timestamp",  # never flagged: a Date or Datetime always converts
    "text-int": "unparsable timestamp (expected unix seconds)",
    "text-float": "unparsable timestamp (expected unix seconds)",
    "iso": "unparsable timestamp (not ISO-8601)",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PEEK_ROWS = 1000
# ISO-8601 shapes polars parses exactly as datetime.fromisoformat does, for years 1970-2099
# (the accepted range); every other string goes through fromisoformat itself.
_ISO_DATE = r"^(19[7-9]\d|20\d\d)-\d\d-\d\d$"
_ISO_SECONDS = r"^(19[7-9]\d|20\d\d)-\d\d-\d\d[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(Z|\+00:00)?$"


@dataclass(frozen=True)
class TimeChecks:
    """The parsed column and the checks of one row, as expressions over the raw column.

    ``value`` is whole seconds (``WHOLE_SECONDS``) or Float64 seconds, or Int64 microseconds
    for ``MICROSECOND_KINDS``.
    ``empty``, ``unparsable``, ``fractional`` and ``out_of_range`` are boolean; a row fails
    at most one of them.
    """

    value: pl.Expr
    empty: pl.Expr
    unparsable: pl.Expr
    fractional: pl.Expr
    out_of_range: pl.Expr


def time_kind(lf: pl.LazyFrame, column: str) -> TimeKind:
    """How ``column`` of ``lf`` is parsed (see the module docstring)."""
    dtype = lf.collect_schema()[column]
    if dtype.is_integer():
        return "int"
    if dtype.is_numeric():
        return "float"
    if dtype == pl.Datetime or dtype == pl.Date:
        return "temporal"
    text = _stripped(pl.col(column))
    head = lf.select(text).filter(text != "").head(_PEEK_ROWS).collect()
    values = head.to_series()
    numbers = values.cast(pl.Float64, strict=False)
    for value, number in zip(values, numbers, strict=True):
        if number is not None:
            return "text-int"
        if _iso_to_micros(value) is not None:
            return "iso"
    return "iso"  # nothing readable: say what a date must look like


def time_checks(column: str, kind: TimeKind) -> TimeChecks:
    """Expressions that parse and check ``column`` as ``kind``."""
    raw = pl.col(column)
    never = pl.lit(False)
    if kind in ("int", "float"):
        value = raw.cast(pl.Int64 if kind == "int" else pl.Float64)
        bad = value.is_null() if kind == "int" else value.is_null() | ~value.is_finite()
        stored = _whole(value) if kind == "int" else value
        return TimeChecks(stored, never, bad, never, ~bad & _outside(value, 1))
    if kind == "temporal":
        value = raw.cast(pl.Datetime("us")).dt.epoch("us")
        return TimeChecks(value, raw.is_null(), never, never, _outside(value, 1_000_000))

    text = _stripped(raw)
    empty = text.is_null() | (text == "")
    if kind == "iso":
        value = text.map_batches(iso_to_micros, return_dtype=pl.Int64, is_elementwise=True)
        unparsable = ~empty & value.is_null()
        return TimeChecks(value, empty, unparsable, never, _outside(value, 1_000_000))
    number = text.cast(pl.Float64, strict=False)
    not_finite = number.is_null() | ~number.is_finite()
    if kind == "text-float":
        unparsable = ~empty & not_finite
        return TimeChecks(number, empty, unparsable, never, ~unparsable & _outside(number, 1))
    whole = text.cast(pl.Int64, strict=False)
    not_whole = ~empty & whole.is_null()
    return TimeChecks(
        _whole(whole), empty, not_whole & not_finite, not_whole & ~not_finite, _outside(whole, 1)
    )


def micros_to_seconds(micros: pl.Series) -> pl.Series:
    """Whole seconds when every value (in range) is a whole second, else Float64 seconds."""
    if (micros % 1_000_000 == 0).all():
        return (micros // 1_000_000).cast(WHOLE_SECONDS).alias("timestamp")
    return (micros.cast(pl.Float64) / 1e6).alias("timestamp")


def iso_to_micros(text: pl.Series) -> pl.Series:
    """Epoch microseconds (Int64) of ISO-8601 strings; null where a value is not ISO-8601.

    The common shapes are parsed by polars; the rest, value by distinct value, by
    ``datetime.fromisoformat``, which defines what is accepted.

    >>> iso_to_micros(pl.Series(["1970-01-02", "1970-01-01T00:00:01Z", "01/02/2020"])).to_list()
    [86400000000, 1000000, None]
    """
    value = pl.col("text")
    # A trailing Z or +00:00 is cut with the rest after the seconds: both mean UTC.
    seconds = value.str.slice(0, 19).str.replace(" ", "T", literal=True)
    frame = pl.DataFrame({"text": text}).with_columns(
        date_only=value.str.contains(_ISO_DATE), with_seconds=value.str.contains(_ISO_SECONDS)
    )
    fast = frame.select(
        pl.when("date_only")
        .then(value.str.strptime(pl.Datetime("us"), "%Y-%m-%d", strict=False))
        .when("with_seconds")
        .then(seconds.str.strptime(pl.Datetime("us"), "%Y-%m-%dT%H:%M:%S", strict=False))
        .dt.epoch("us")
    ).to_series()
    is_other = ~(frame["date_only"] | frame["with_seconds"])
    others = text.filter(is_other).drop_nulls().unique()
    if others.len() == 0:
        return fast.alias(text.name)
    parsed = {value: _iso_to_micros(value) for value in others.to_list()}
    slow = text.replace_strict(parsed, default=None, return_dtype=pl.Int64)
    return fast.fill_null(slow).alias(text.name)


def _iso_to_micros(value: str) -> int | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _whole(seconds: pl.Expr) -> pl.Expr:
    """Int64 seconds as ``WHOLE_SECONDS``; values out of range (flagged) become null."""
    return seconds.cast(WHOLE_SECONDS, strict=False)


def _stripped(raw: pl.Expr) -> pl.Expr:
    return raw.cast(pl.String).str.strip_chars()


def _outside(value: pl.Expr, per_second: int) -> pl.Expr:
    """``value`` (in units of 1/per_second s) falls outside the accepted range."""
    low, high = MIN_TIMESTAMP * per_second, MAX_TIMESTAMP * per_second
    return ((value < low) | (value >= high)).fill_null(False)
