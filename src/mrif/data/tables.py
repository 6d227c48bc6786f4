"""Interaction tables (CSV, TSV, Parquet, RecBole ``.inter``), read in one streaming pass.

``read_table`` scans the file lazily (``pl.scan_csv``, ``pl.scan_parquet``) and collects with
the streaming engine only what later steps need: user and item ids as categorical codes (see
``codes.py``), the parsed timestamp, the rating when asked for, and a one-byte flag per row
naming the first check the row fails. A file with bad rows is scanned a second time, for the
few rows to quote: the first bad one (the error names file, line and reason) or, with
``skip_bad_lines``, the first ``MAX_EXAMPLES`` of those dropped.

The checks, in the order that decides which row a file with several bad rows reports: empty
user id, empty item id, the timestamp (empty, unparsable, out of range; see
``timestamps.py``), the rating (unparsable). A blank line (every field empty) is dropped
without a word; every column is parsed, so that too many fields on a line are noticed.

Lines: the header is line 1 and each record one line (quoted newlines would shift the count);
a Parquet file has no lines, so its 1-based row numbers stand in. A record the parser cannot
split (more fields than the header, an unclosed quote, bytes that are not UTF-8) stops the
scan; the error names its line, found by ``delimited.py``. With ``skip_bad_lines`` the file
is then copied without such lines and the copy scanned. A gzip file is decompressed to a
temporary copy first, so no step holds the file in memory.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mrif.data.checks import MAX_EXAMPLES, TIMESTAMP_RANGE, DataFormatError, SkippedLines
from mrif.data.codes import id_dtype
from mrif.data.delimited import check_header, copy_splittable_lines, first_unsplittable_line
from mrif.data.lines import gunzipped, is_blank_file
from mrif.data.timestamps import (
    MICROSECOND_KINDS,
    UNPARSABLE,
    TimeKind,
    micros_to_seconds,
    time_checks,
    time_kind,
)

TABLE_FORMATS = ("csv", "tsv", "parquet", "recbole")
# Row flags, one byte per row: what the first failed check was.
OK, BLANK = 0, 1
EMPTY_USER, EMPTY_ITEM, EMPTY_TIME, BAD_TIME, FRACTIONAL_TIME, TIME_RANGE, BAD_RATING = range(2, 9)
_REPORT_ORDER = (EMPTY_USER, EMPTY_ITEM, EMPTY_TIME, BAD_TIME, TIME_RANGE, BAD_RATING)
_ROW = "_mrif_row_index"  # added to re-read a few rows; no file is expected to use the name


@dataclass(frozen=True)
class TableColumns:
    """Names of the columns to read; ``time`` None for a table without timestamps, ``rating``
    None when ratings are not wanted (a named rating column that is absent is skipped)."""

    user: str
    item: str
    time: str | None
    rating: str | None


class _Unsplittable(Exception):
    """The parser could not split a record into fields; the message is its complaint."""


@dataclass(frozen=True)
class _Source:
    """The file a reader was given (``origin``, for messages) and the one it scans."""

    origin: Path
    plain: Path
    fmt: str
    dropped_lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def is_text(self) -> bool:
        return self.fmt != "parquet"

    @property
    def separator(self) -> str:
        return "," if self.fmt == "csv" else "\t"

    @property
    def quote_char(self) -> str | None:
        # Tab-separated files in the wild do not quote; a stray '"' must not swallow lines.
        return '"' if self.fmt == "csv" else None

    def scan(self) -> pl.LazyFrame:
        if not self.is_text:
            return pl.scan_parquet(self.plain)
        lf = pl.scan_csv(
            self.plain,
            separator=self.separator,
            quote_char=self.quote_char,
            infer_schema=False,  # every column as Utf8: ids are never parsed as numbers
            raise_if_empty=True,
        )
        if self.fmt == "recbole":  # ``user_id:token`` -> ``user_id``
            lf = lf.rename({c: c.rsplit(":", 1)[0] for c in lf.collect_schema().names()})
        return lf

    def lines(self, rows: np.ndarray) -> np.ndarray:
        """Line (row, for Parquet) number in ``origin`` of 0-based scanned rows."""
        lines = np.asarray(rows, dtype=np.int64) + (2 if self.is_text else 1)
        if self.dropped_lines.size:
            # Lines of the copy skip the dropped ones: count those at or before each line.
            shifted = self.dropped_lines - np.arange(1, self.dropped_lines.size + 1)
            lines = lines + np.searchsorted(shifted, lines, side="left")
        return lines


def read_table(
    path: str | Path,
    fmt: str,
    columns: TableColumns,
    *,
    skip_bad_lines: bool = False,
    keep_rating: bool = True,
) -> tuple[pl.DataFrame, SkippedLines]:
    """Read a table into ``user``, ``item`` (Categorical), ``timestamp`` and, when present
    and ``keep_rating``, ``rating`` (Float64), in file order, without the bad rows.

    ``timestamp`` is whole unix seconds (UInt32, see ``timestamps.WHOLE_SECONDS``) or Float64
    ones, or dtype Null when ``columns.time`` is None. A bad row raises ``DataFormatError``
    (see the module docstring), or with ``skip_bad_lines`` is dropped and counted in the
    returned ``SkippedLines``. The rating is checked even when it is not kept.
    """
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(TABLE_FORMATS)}; got {fmt!r}")
    with gunzipped(path) as plain:
        if is_blank_file(plain):
            raise DataFormatError(path, "file is empty")
        source = _Source(Path(path), plain, fmt)
        if source.is_text:
            check_header(path, plain, source.separator, source.quote_char)
        try:
            frame, n_bad, examples = _read(source, columns, skip_bad_lines, keep_rating)
        except _Unsplittable as err:
            if not skip_bad_lines:
                line = first_unsplittable_line(plain, source.separator, source.quote_char)
                raise DataFormatError(path, f"cannot parse as {fmt} ({err})", line=line) from None
            frame, n_bad, examples = _read_splittable_copy(source, columns, keep_rating)
    skipped = SkippedLines(n_bad, tuple(text for _, text in sorted(examples)[:MAX_EXAMPLES]))
    return frame, skipped


def _read_splittable_copy(
    source: _Source, columns: TableColumns, keep_rating: bool
) -> tuple[pl.DataFrame, int, list[tuple[int, str]]]:
    """``_read`` on a copy of the file without the lines the parser cannot split."""
    with tempfile.TemporaryDirectory(prefix="mrif-table-") as tmp:
        copy = Path(tmp) / source.plain.name
        dropped, examples = copy_splittable_lines(
            source.plain, copy, source.separator, source.quote_char
        )
        try:
            frame, n_bad, bad_examples = _read(
                replace(source, plain=copy, dropped_lines=dropped), columns, True, keep_rating
            )
        except _Unsplittable as err:
            raise DataFormatError(source.origin, f"cannot parse as {source.fmt} ({err})") from None
    unsplittable = list(zip(dropped[: len(examples)].tolist(), examples, strict=True))
    return frame, n_bad + int(dropped.size), unsplittable + bad_examples


def _read(
    source: _Source, columns: TableColumns, skip_bad_lines: bool, keep_rating: bool
) -> tuple[pl.DataFrame, int, list[tuple[int, str]]]:
    """The frame of ``read_table`` from one scannable file, the number of bad rows dropped and
    ``(line, "line N: reason")`` for the first few; polars failures to split a record raise
    ``_Unsplittable``."""
    try:
        lf = source.scan()
        names = lf.collect_schema().names()
    except pl.exceptions.PolarsError as err:
        raise _unreadable(source, err) from None
    _check_columns(source.origin, names, columns)
    columns = replace(columns, rating=columns.rating if columns.rating in names else None)

    try:
        kind = time_kind(lf, columns.time) if columns.time is not None else None
        frame = _scan(source, lf, columns, kind, keep_rating)
        if kind == "text-int" and (frame["_flag"] == FRACTIONAL_TIME).any():
            kind = "text-float"  # one fractional value makes the whole column Float64 seconds
            frame = _scan(source, lf, columns, kind, keep_rating)
    except pl.exceptions.PolarsError as err:
        raise _unreadable(source, err) from None

    flags = frame["_flag"].to_numpy()
    bad_rows = np.flatnonzero(flags > BLANK)
    if bad_rows.size and not skip_bad_lines:
        row = _first_to_report(flags)
        reason = _reasons(source, lf, columns, kind, flags, np.array([row]))[0]
        raise DataFormatError(source.origin, reason, line=int(source.lines(np.array([row]))[0]))
    examples = []
    if bad_rows.size:
        rows = bad_rows[:MAX_EXAMPLES]
        reasons = _reasons(source, lf, columns, kind, flags, rows)
        lines = source.lines(rows).tolist()
        examples = [(n, f"line {n}: {reason}") for n, reason in zip(lines, reasons, strict=True)]
    if flags.any():
        frame = frame.filter(pl.col("_flag") == OK)
    frame = frame.drop("_flag")

    if kind in MICROSECOND_KINDS:
        frame = frame.with_columns(micros_to_seconds(frame["timestamp"]))
    elif kind is None:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Null).alias("timestamp"))
    order = ["user", "item", "timestamp", *(["rating"] if "rating" in frame.columns else [])]
    return frame.select(order), int(bad_rows.size), examples


def _scan(
    source: _Source,
    lf: pl.LazyFrame,
    columns: TableColumns,
    kind: TimeKind | None,
    keep_rating: bool,
) -> pl.DataFrame:
    """One streaming pass: the parsed columns and ``_flag``, the first check each row fails."""
    user = pl.col(columns.user).cast(pl.String)
    item = pl.col(columns.item).cast(pl.String)
    selected = {"user": user.cast(id_dtype()), "item": item.cast(id_dtype())}
    checks = [(_is_empty(user), EMPTY_USER), (_is_empty(item), EMPTY_ITEM)]
    if columns.time is not None and kind is not None:
        time = time_checks(columns.time, kind)
        selected["timestamp"] = time.value
        checks += [
            (time.empty, EMPTY_TIME),
            (time.unparsable, BAD_TIME),
            (time.fractional, FRACTIONAL_TIME),
            (time.out_of_range, TIME_RANGE),
        ]
    if columns.rating is not None:
        rating, bad_rating = _rating(lf, columns.rating)
        if keep_rating:
            selected["rating"] = rating
        checks.append((bad_rating, BAD_RATING))
    if source.is_text:
        # A blank line reads as a row of nulls. Looking at every column also makes the parser
        # split every record in full, which is how it notices a record with too many fields.
        checks.insert(0, (pl.all_horizontal(pl.all().is_null()), BLANK))

    flags = [pl.when(check).then(pl.lit(code, dtype=pl.UInt8)) for check, code in checks]
    selected["_flag"] = pl.coalesce(*flags, pl.lit(OK, dtype=pl.UInt8))  # the first that fails
    return lf.select(**selected).collect(engine="streaming")


def _rating(lf: pl.LazyFrame, column: str) -> tuple[pl.Expr, pl.Expr]:
    """The rating as Float64, and whether a row holds a value that is not a number."""
    raw = pl.col(column)
    if lf.collect_schema()[column].is_numeric():
        return raw.cast(pl.Float64), pl.lit(False)
    text = raw.cast(pl.String).str.strip_chars()
    rating = text.cast(pl.Float64, strict=False)
    return rating, rating.is_null() & text.is_not_null()


def _is_empty(ids: pl.Expr) -> pl.Expr:
    return ids.is_null() | (ids == "")


def _check_columns(origin: Path, names: list[str], columns: TableColumns) -> None:
    roles = {"user": columns.user, "item": columns.item, "timestamp": columns.time}
    for role, name in roles.items():
        if name is not None and name not in names:
            hint = ""
            if role == "timestamp":
                hint = " (pass time_col=None for a file without timestamps)"
            raise DataFormatError(
                origin, f"missing {role} column {name!r}; columns found: {names}{hint}"
            )


def _first_to_report(flags: np.ndarray) -> int:
    """The row a strict read reports: the first failing the earliest check in the order."""
    for flag in _REPORT_ORDER:
        rows = np.flatnonzero(flags == flag)
        if rows.size:
            return int(rows[0])
    raise AssertionError("no bad row")  # the caller checked there is one


def _reasons(
    source: _Source,
    lf: pl.LazyFrame,
    columns: TableColumns,
    kind: TimeKind | None,
    flags: np.ndarray,
    rows: np.ndarray,
) -> list[str]:
    """The reason each of ``rows`` (few, ascending) is bad, quoting its value as written."""
    used = [c for c in (columns.user, columns.item, columns.time, columns.rating) if c]
    wanted = pl.col(_ROW).is_in(pl.Series(rows.astype(np.uint32)).implode())
    records = (
        lf.with_row_index(_ROW)
        .filter(wanted)
        .select(_ROW, *dict.fromkeys(used))
        .collect(engine="streaming")
    )
    by_row = {record[_ROW]: record for record in records.iter_rows(named=True)}
    return [_reason(int(flags[row]), by_row[int(row)], columns, kind) for row in rows]


def _reason(flag: int, record: dict[str, Any], columns: TableColumns, kind: TimeKind | None) -> str:
    time = record.get(columns.time) if columns.time else None
    text_time = time.strip() if isinstance(time, str) else time
    rating = record.get(columns.rating) if columns.rating else None
    reason, value = {
        EMPTY_USER: ("empty user id", record[columns.user]),
        EMPTY_ITEM: ("empty item id", record[columns.item]),
        EMPTY_TIME: ("empty timestamp", text_time),
        BAD_TIME: (UNPARSABLE[kind] if kind else "", text_time),
        TIME_RANGE: (f"timestamp out of range ({TIMESTAMP_RANGE})", time),
        BAD_RATING: ("unparsable rating", rating.strip() if isinstance(rating, str) else rating),
    }[flag]
    # A missing field has no value to quote; the reason ("empty ...") says it all.
    return reason if value is None else f"{reason}: {value!r}"


def _unreadable(source: _Source, err: Exception) -> Exception:
    if source.is_text:
        return _Unsplittable(_first_line(err))
    return DataFormatError(source.origin, f"not a readable parquet file ({_first_line(err)})")


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
