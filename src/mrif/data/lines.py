"""Read line-per-record raw files (published dataset dumps) into the common frame.

A format is one function that turns the text of one line into ``(user, item, rating,
timestamp)`` or raises ``BadLine`` with the reason. ``read_lines`` streams the file (gunzipped
when it starts with the gzip magic bytes, a UTF-8 byte-order mark dropped), calls it on every
non-blank line and either stops at the first bad line with a ``DataFormatError`` naming file,
line and reason, or, with ``skip_bad_lines``, drops bad lines and counts them. A gzip stream
that ends early is always an error: the lost tail cannot be counted. Lines are parsed in
chunks of ``_CHUNK_ROWS``, each turned into a polars frame (and, through ``convert``, ids into
codes) before the next is read, so no more than a chunk is ever held as Python objects.

``gunzipped`` and ``is_blank_file`` serve the readers that hand a whole file to polars.

The helpers below (``parse_id``, ``parse_rating``, ``parse_seconds``) hold the field rules
every line format shares: ids stay strings (PROTOCOL.md rule 1), ratings are finite numbers,
timestamps are whole unix seconds inside the range of ``checks.py``.
"""

from __future__ import annotations

import gzip
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from mrif.data.checks import (
    MAX_EXAMPLES,
    TIMESTAMP_RANGE,
    DataFormatError,
    SkippedLines,
    timestamp_out_of_range,
)

Row = tuple[str, str, float, int]  # user, item, rating, timestamp (unix seconds)
LineParser = Callable[[str], Row]

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
_CHUNK_ROWS = 1 << 20  # rows held as Python objects before they become a polars chunk
_INTEGER = re.compile(r"[+-]?[0-9]+")
_SCHEMA = {"user": pl.Utf8, "item": pl.Utf8, "timestamp": pl.Int64, "rating": pl.Float64}


class BadLine(ValueError):
    """Raised by a line parser; the message is the reason the line cannot be read."""


def read_lines(
    path: str | Path,
    parse: LineParser,
    *,
    skip_bad_lines: bool = False,
    header_hint: str | None = None,
    convert: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> tuple[pl.DataFrame, SkippedLines]:
    """Parse every non-blank line of ``path`` with ``parse``, in file order.

    Returns the frame with columns ``user``, ``item`` (Utf8), ``timestamp`` (Int64 unix
    seconds) and ``rating`` (Float64), and what was skipped. ``header_hint`` is added to the
    reason when the first non-blank line is bad, for layouts that have no header line.
    ``convert`` is applied to each chunk as it is made (the readers turn ids into codes).
    """
    chunks: list[pl.DataFrame] = []
    rows: list[Row] = []
    n_bad = 0
    examples: list[str] = []
    seen_a_line = False
    for line_no, raw in iter_lines(path):
        try:
            row = _parse_line(raw, parse)
        except BadLine as bad:
            reason = str(bad)
            if not seen_a_line and header_hint:
                reason = f"{reason} ({header_hint})"
            seen_a_line = True
            if not skip_bad_lines:
                raise DataFormatError(path, reason, line=line_no) from None
            n_bad += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(f"line {line_no}: {reason}")
            continue
        if row is None:
            continue  # blank lines carry nothing
        seen_a_line = True
        rows.append(row)
        if len(rows) >= _CHUNK_ROWS:
            chunks.append(_frame(rows, convert))
            rows = []

    chunks.append(_frame(rows, convert))
    skipped = SkippedLines(n_bad, tuple(examples))
    if not seen_a_line:
        raise DataFormatError(path, "file is empty")
    df = pl.concat(chunks) if len(chunks) > 1 else chunks[0]
    if df.height == 0:
        raise DataFormatError(path, f"no interactions: every line is bad ({skipped.summary()})")
    return df, skipped


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """1-based line number and bytes (line ending dropped) of each line of ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    line_no = 0
    with path.open("rb") as handle:
        is_gzip = handle.read(2) == GZIP_MAGIC
        handle.seek(0)
        stream = gzip.GzipFile(fileobj=handle) if is_gzip else handle
        try:
            for line_no, line in enumerate(stream, start=1):
                if line_no == 1 and line.startswith(UTF8_BOM):
                    line = line[len(UTF8_BOM) :]
                yield line_no, line.rstrip(b"\r\n")
        except (EOFError, OSError, zlib.error) as err:  # gzip reports truncation as EOFError
            if not is_gzip:
                raise
            reason = f"corrupt or truncated gzip data after line {line_no} ({err})"
            raise DataFormatError(path, reason, line=line_no + 1) from None


@contextmanager
def gunzipped(path: str | Path) -> Iterator[Path]:
    """``path`` itself, or a decompressed temporary copy when it starts with the gzip magic.

    The copy is written block by block (the file is never held in memory whole) and removed
    on exit. A truncated or corrupt stream fails like ``iter_lines``: at the line after the
    last one that decompressed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as handle:
        is_gzip = handle.read(2) == GZIP_MAGIC
    if not is_gzip:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mrif-gunzip-") as tmp:
        plain = Path(tmp) / path.name.removesuffix(".gz")
        n_lines = 0
        with gzip.open(path, "rb") as stream, plain.open("wb") as out:
            try:
                while block := stream.read(1 << 16):  # small blocks: keep what precedes damage
                    out.write(block)
                    n_lines += block.count(b"\n")
            except (EOFError, OSError, zlib.error) as err:
                reason = f"corrupt or truncated gzip data after line {n_lines} ({err})"
                raise DataFormatError(path, reason, line=n_lines + 1) from None
        yield plain


def is_blank_file(path: str | Path) -> bool:
    """True when ``path`` holds nothing but whitespace and perhaps a UTF-8 byte-order mark
    (read until the first other byte)."""
    with Path(path).open("rb") as handle:
        block = handle.read(1 << 16).removeprefix(UTF8_BOM)
        while block:
            if block.strip():
                return False
            block = handle.read(1 << 16)
    return True


def split_fields(text: str, separator: str, names: tuple[str, ...]) -> list[str]:
    """``text`` split on ``separator``; exactly ``len(names)`` fields or ``BadLine``."""
    fields = text.split(separator)
    if len(fields) != len(names):
        raise BadLine(
            f"expected {len(names)} fields separated by {separator!r} ({', '.join(names)}); "
            f"got {len(fields)}: {_clip(text)!r}"
        )
    return fields


def parse_row(user: object, item: object, rating: object, seconds: object) -> Row:
    """The four fields of one record, each checked by the helpers below."""
    return (
        parse_id(user, "user"),
        parse_id(item, "item"),
        parse_rating(rating),
        parse_seconds(seconds),
    )


def parse_id(value: object, role: str) -> str:
    """A raw id as a string. Text is kept exactly; a JSON integer becomes its digits."""
    if isinstance(value, str):
        if not value.strip():
            raise BadLine(f"empty {role} id")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadLine(f"{role} id must be a string; got {_clip(repr(value))} ({type(value).__name__})")


def parse_rating(value: object) -> float:
    """A finite rating from text or a JSON number."""
    if isinstance(value, str):
        try:
            rating = float(value.strip())
        except ValueError:
            raise BadLine(f"unparsable rating: {_clip(value)!r}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        rating = float(value)
    else:
        raise BadLine(f"rating must be a number; got {_clip(repr(value))}")
    if rating != rating or rating in (float("inf"), float("-inf")):
        raise BadLine(f"rating must be finite; got {value!r}")
    return rating


def parse_whole_number(value: object, what: str) -> int:
    """A whole number from digits or a JSON number (an integral float is accepted)."""
    if isinstance(value, str):
        if not _INTEGER.fullmatch(value.strip()):
            raise BadLine(f"unparsable {what} (expected a whole number): {_clip(value)!r}")
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise BadLine(f"{what} must be a whole number; got {_clip(repr(value))}")


def parse_seconds(value: object) -> int:
    """Whole unix seconds inside the accepted range (``checks.TIMESTAMP_RANGE``)."""
    seconds = parse_whole_number(value, "timestamp")
    if timestamp_out_of_range(seconds):
        raise BadLine(f"timestamp out of range ({TIMESTAMP_RANGE}): {seconds}")
    return seconds


def _parse_line(raw: bytes, parse: LineParser) -> Row | None:
    """The parsed row, or None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadLine(f"not UTF-8 text ({err})") from None
    return parse(text) if text.strip() else None


def _frame(rows: list[Row], convert: Callable[[pl.DataFrame], pl.DataFrame] | None) -> pl.DataFrame:
    users, items, ratings, times = zip(*rows, strict=True) if rows else ((), (), (), ())
    frame = pl.DataFrame(
        {"user": users, "item": items, "timestamp": times, "rating": ratings}, schema=_SCHEMA
    )
    return frame if convert is None else convert(frame)


def _clip(text: str, limit: int = 80) -> str:
    """Quoted input is cut short: a bad line can be a whole review."""
    return text if len(text) <= limit else text[:limit] + "..."
