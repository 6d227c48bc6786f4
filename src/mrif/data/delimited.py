"""Record-level checks of delimited text (CSV, TSV, RecBole) that the fast parser cannot make.

polars reads a table in one pass but stops at the first record it cannot split into the
header's fields without saying where. These slow, line-by-line helpers run only then, or
before the scan for the header alone:

* ``check_header``: a column named twice would be renamed silently by the parser; refuse it.
* ``first_unsplittable_line``: where the failing record starts, for the error message.
* ``copy_splittable_lines``: for ``skip_bad_lines``, a copy of the file without the lines that
  do not split into the header's number of fields or are not UTF-8, and which lines those were.

Line numbers assume one record per line (no quoted newlines); the header is line 1.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from mrif.data.checks import MAX_EXAMPLES, DataFormatError
from mrif.data.lines import UTF8_BOM, iter_lines


def read_header(path: str | Path, separator: str, quote_char: str | None) -> list[str]:
    """Column names on the first line of ``path`` (a byte-order mark dropped)."""
    first_line = b""
    for _, line in iter_lines(path):
        first_line = line
        break
    text = first_line.removeprefix(UTF8_BOM).decode("utf-8", errors="replace")
    return _split(text, separator, quote_char)


def check_header(
    origin: str | Path, path: str | Path, separator: str, quote_char: str | None
) -> None:
    """Refuse a header that names a column twice (reported against ``origin``)."""
    seen: set[str] = set()
    for name in read_header(path, separator, quote_char):
        if name in seen:
            raise DataFormatError(origin, f"column {name!r} appears twice in the header", line=1)
        seen.add(name)


def first_unsplittable_line(path: str | Path, separator: str, quote_char: str | None) -> int | None:
    """Line where the first record with the wrong number of fields starts, or the first line
    that is not UTF-8, whichever comes first; None when there is neither.

    Records are read as the csv module reads them, so an unclosed quote is reported at the
    line where its record starts, not where the file ends.
    """
    not_utf8: list[int] = []

    def texts() -> Iterator[str]:
        for line_no, line in iter_lines(path):
            try:
                yield line.decode("utf-8") + "\n"
            except UnicodeDecodeError:
                not_utf8.append(line_no)
                yield line.decode("utf-8", errors="replace") + "\n"

    reader = _reader(texts(), separator, quote_char)
    ragged = None
    try:
        n_fields = len(next(reader))
        last_line_read = reader.line_num
        for record in reader:
            if record and len(record) != n_fields:
                ragged = last_line_read + 1
                break
            if not_utf8:
                break
            last_line_read = reader.line_num
    except (StopIteration, csv.Error):
        pass
    found = [line for line in (ragged, *not_utf8[:1]) if line is not None]
    return min(found) if found else None


def copy_splittable_lines(
    path: str | Path, dest: Path, separator: str, quote_char: str | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Copy ``path`` to ``dest`` without the lines that are not UTF-8 or do not split into the
    header's number of fields; return those lines (ascending) and the first few as
    ``line N: reason``. Blank lines are kept: the table reader drops them itself.
    """
    dropped: list[int] = []
    examples: list[str] = []
    n_fields = 0
    with dest.open("wb") as out:
        for line_no, line in iter_lines(path):
            reason = None
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                reason = f"not UTF-8 text ({err})"
            else:
                if line_no == 1:
                    n_fields = len(_split(text, separator, quote_char))
                elif text.strip():
                    got = len(_split(text, separator, quote_char))
                    if got != n_fields:
                        reason = (
                            f"expected {n_fields} fields separated by {separator!r} "
                            f"(as in the header); got {got}"
                        )
            if reason is None:
                out.write(line + b"\n")
                continue
            if line_no == 1:
                raise DataFormatError(path, f"header line: {reason}", line=1)
            dropped.append(line_no)
            if len(examples) < MAX_EXAMPLES:
                examples.append(f"line {line_no}: {reason}")
    return np.asarray(dropped, dtype=np.int64), tuple(examples)


def _split(text: str, separator: str, quote_char: str | None) -> list[str]:
    return next(_reader([text], separator, quote_char), [])


def _reader(lines: Iterable[str], separator: str, quote_char: str | None):
    """A csv reader over ``lines`` (its ``line_num`` counts the lines consumed)."""
    if quote_char is None:
        return csv.reader(lines, delimiter=separator, quoting=csv.QUOTE_NONE)
    return csv.reader(lines, delimiter=separator, quotechar=quote_char)
