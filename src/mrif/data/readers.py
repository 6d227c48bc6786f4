"""Read raw interaction files into one polars frame.

Every reader returns the same columns, in file order:

* ``user``, ``item`` (Utf8): raw ids, never parsed as numbers (PROTOCOL.md rule 1), so
  ``"007"`` and ``"7"`` stay different and 19-digit ids stay intact.
* ``timestamp``: Int64 or Float64 unix seconds, or dtype Null when the source has none.
* ``rating`` (Float64): only when the source has a rating column.
* ``order`` (Int64): 0-based row index in the file, the tie-break of the stable sort.

Supported formats (``fmt``): ``csv``, ``tsv``, ``parquet`` (interaction tables),
``sequence`` (one user per line: ``user item item ...``), ``recbole`` (atomic ``.inter``
files with ``name:type`` headers) and the published raw dumps, read line by line:
``amazon-ratings``, ``amazon-reviews``, ``amazon-2023`` (see ``amazon.py``),
``movielens-dat`` and ``movielens-udata`` (see ``movielens.py``). Gzip is detected from the
magic bytes; a UTF-8 byte-order mark is dropped. Timestamps must lie in the range of
``checks.py`` (1970 to 2100 in unix seconds).

Bad input raises ``DataFormatError`` naming the file, the line and the reason. With
``skip_bad_lines`` the line formats and ``sequence`` drop bad lines instead and report how
many (``read_interactions_with_skips``); the table formats are parsed as a whole and do not
skip yet.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import warnings
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from mrif.data import amazon, movielens
from mrif.data.checks import (
    MAX_EXAMPLES,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    TIMESTAMP_RANGE,
    DataFormatError,
    SkippedLines,
)
from mrif.data.lines import GZIP_MAGIC, UTF8_BOM, BadLine, LineParser, iter_lines, read_lines

_NO_HEADER = "the {fmt} layout has no header line; pass fmt='csv' for a table with one"
# Line formats: the parser of one line, and whether the layout can be mistaken for a table
# with a header (then a bad first line gets a hint).
LINE_FORMATS: dict[str, tuple[LineParser, bool]] = {
    "amazon-ratings": (amazon.parse_ratings_line, True),
    "amazon-reviews": (amazon.parse_review_line, False),
    "amazon-2023": (amazon.parse_review_2023_line, False),
    "movielens-dat": (movielens.parse_dat_line, True),
    "movielens-udata": (movielens.parse_udata_line, True),
}
FORMATS = ("csv", "tsv", "parquet", "sequence", "recbole", *LINE_FORMATS)
SKIPPING_FORMATS = ("sequence", *LINE_FORMATS)
_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".txt": "sequence",
    ".inter": "recbole",
}
# Published file names that fix the layout (matched on the lower-cased name without .gz).
_NAME_FORMATS = (
    (re.compile(r"ratings_.+\.csv"), "amazon-ratings"),
    (re.compile(r"reviews_.+\.json"), "amazon-reviews"),
    (re.compile(r"ratings\.dat"), "movielens-dat"),
    (re.compile(r"u\.data|u[1-5ab]\.(base|test)"), "movielens-udata"),
)
_JSON_SUFFIXES = (".json", ".jsonl")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TABLE_DEFAULTS = {"user_col": "user", "item_col": "item"}
# RecBole names its interaction fields user_id / item_id (after the ``:token`` suffix).
_RECBOLE_DEFAULTS = {"user_col": "user_id", "item_col": "item_id"}


def detect_format(path: str | Path) -> str:
    """Format name from the file name (``.gz`` ignored), or from the first record's keys.

    Suffixes: ``.csv``, ``.tsv``, ``.parquet``, ``.txt`` (sequence), ``.inter`` (recbole).
    Published names: ``ratings_<Category>.csv`` (amazon-ratings), ``reviews_<Category>.json``
    (amazon-reviews), ``ratings.dat`` (movielens-dat), ``u.data``/``u1.base``... (movielens-
    udata). Other ``.json``/``.jsonl`` files are told apart by the keys of their first record.
    """
    name = Path(path).name.lower().removesuffix(".gz")
    for pattern, fmt in _NAME_FORMATS:
        if pattern.fullmatch(name):
            return fmt
    suffix = Path(name).suffix
    if suffix in _JSON_SUFFIXES:
        return _sniff_json_format(path)
    if suffix not in _SUFFIX_FORMATS:
        known = ", ".join(f"{s} ({f})" for s, f in _SUFFIX_FORMATS.items())
        raise DataFormatError(
            path, f"cannot tell the format from the suffix {suffix!r}; known: {known}; pass fmt="
        )
    return _SUFFIX_FORMATS[suffix]


def _sniff_json_format(path: str | Path) -> str:
    """``amazon-reviews`` or ``amazon-2023``, from the keys of the first non-blank line."""
    for line_no, raw in iter_lines(path):
        text = raw.decode("utf-8", errors="replace")
        if text.strip():
            try:
                return amazon.json_layout(text)
            except BadLine as bad:
                raise DataFormatError(path, f"{bad}; pass fmt=", line=line_no) from None
    raise DataFormatError(path, "file is empty")


def read_source_bytes(path: str | Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = path.read_bytes()
    if data[:2] != GZIP_MAGIC:
        return data
    blocks = []
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while block := stream.read(1 << 16):  # small blocks: keep what precedes damage
                blocks.append(block)
    except (OSError, EOFError, zlib.error) as err:
        # Lines before the damage decompressed fine: name the first one that did not.
        n_lines = sum(block.count(b"\n") for block in blocks)
        reason = f"corrupt or truncated gzip data after line {n_lines} ({err})"
        raise DataFormatError(path, reason, line=n_lines + 1) from None
    return b"".join(blocks)


def source_sha256(path: str | Path) -> str:
    """sha256 hex digest of the decompressed content (what the registry checksums record).

    The file is read in blocks, so a multi-gigabyte dump is never held in memory whole.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    digest, n_lines = hashlib.sha256(), 0
    with path.open("rb") as handle:
        is_gzip = handle.read(2) == GZIP_MAGIC
        handle.seek(0)
        stream = gzip.GzipFile(fileobj=handle) if is_gzip else handle
        try:
            while block := stream.read(1 << 16):
                digest.update(block)
                n_lines += block.count(b"\n")
        except (EOFError, OSError, zlib.error) as err:
            if not is_gzip:
                raise
            reason = f"corrupt or truncated gzip data after line {n_lines} ({err})"
            raise DataFormatError(path, reason, line=n_lines + 1) from None
    return digest.hexdigest()


def content_sha256(data: bytes, origin: str) -> str:
    """sha256 of ``data`` (fetched from ``origin``), gunzipped first when it is gzip."""
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise DataFormatError(origin, f"corrupt or truncated gzip data ({err})") from None
    return hashlib.sha256(data).hexdigest()


def read_interactions(
    path: str | Path,
    *,
    fmt: str | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = "timestamp",
    rating_col: str | None = "rating",
    skip_bad_lines: bool = False,
) -> pl.DataFrame:
    """Read ``path`` into the common frame described in the module docstring.

    Column names apply to tables and RecBole files (``user_col``/``item_col`` default to
    ``user``/``item``, or ``user_id``/``item_id`` for RecBole). ``time_col=None`` reads a table
    without timestamps; a named ``time_col`` that is absent is an error. The rating column is
    optional: it is kept when present and skipped when absent (ratings never rank, rule 1).
    Sequence files and the published line formats have fixed layouts and take no column
    names (``rating_col=None`` still drops the ratings of a line format).

    ``skip_bad_lines`` drops the bad lines of a line format or a sequence file, with a
    warning that counts them, instead of failing at the first; ``read_interactions_with_skips``
    also returns the count.
    """
    df, _ = read_interactions_with_skips(
        path, fmt=fmt, user_col=user_col, item_col=item_col, time_col=time_col,
        rating_col=rating_col, skip_bad_lines=skip_bad_lines,
    )  # fmt: skip
    return df


def read_interactions_with_skips(
    path: str | Path,
    *,
    fmt: str | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = "timestamp",
    rating_col: str | None = "rating",
    skip_bad_lines: bool = False,
) -> tuple[pl.DataFrame, SkippedLines]:
    """``read_interactions``, and the lines it skipped (none unless ``skip_bad_lines``)."""
    fmt = detect_format(path) if fmt is None else fmt
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)} or None; got {fmt!r}")
    if skip_bad_lines and fmt not in SKIPPING_FORMATS:
        # TODO(#4): table formats are parsed whole by polars; skipping needs the streaming reader.
        raise NotImplementedError(
            f"skip_bad_lines is not implemented for fmt={fmt!r}, which is parsed as a whole "
            f"table (it is for {', '.join(SKIPPING_FORMATS)}); run without it to see the first "
            "bad line, then fix or remove it"
        )

    skipped = SkippedLines()
    if fmt in LINE_FORMATS:
        _refuse_column_names(path, fmt, user_col, item_col, time_col, rating_col)
        parse, headerless = LINE_FORMATS[fmt]
        hint = _NO_HEADER.format(fmt=fmt) if headerless else None
        df, skipped = read_lines(path, parse, skip_bad_lines=skip_bad_lines, header_hint=hint)
        if rating_col is None:
            df = df.drop("rating")
    else:
        data = read_source_bytes(path)
        if data.startswith(UTF8_BOM):
            data = data[len(UTF8_BOM) :]
        if not data.strip():
            raise DataFormatError(path, "file is empty")
        if fmt == "sequence":
            _refuse_column_names(path, fmt, user_col, item_col, time_col, rating_col)
            df, skipped = _read_sequence(path, data, skip_bad_lines)
        else:
            defaults = _RECBOLE_DEFAULTS if fmt == "recbole" else _TABLE_DEFAULTS
            ids = {
                "user": user_col or defaults["user_col"],
                "item": item_col or defaults["item_col"],
            }
            df = _standardise(path, _read_table(path, data, fmt), ids, time_col, rating_col)

    if df.height == 0:
        raise DataFormatError(path, "no interactions (only a header or blank lines)")
    if skipped.count:
        warnings.warn(f"{path}: {skipped.summary()}", stacklevel=3)
    order = pl.int_range(df.height, dtype=pl.Int64).alias("order")
    return df.select(pl.exclude("_line"), order), skipped


def _refuse_column_names(
    path: str | Path,
    fmt: str,
    user_col: str | None,
    item_col: str | None,
    time_col: str | None,
    rating_col: str | None,
) -> None:
    """Fixed layouts have no column names to choose: refuse them rather than ignore them."""
    named: dict[str, str | None] = {"user_col": user_col, "item_col": item_col}
    if fmt == "sequence":
        if time_col not in (None, "timestamp"):
            named["time_col"] = time_col
        layout = "a sequence file has none (each line is 'user item item ...')"
        instead = "pass a table format"
    else:
        if time_col != "timestamp":
            named["time_col"] = time_col or "None"
        if rating_col not in (None, "rating"):
            named["rating_col"] = rating_col
        layout = f"the {fmt} layout is fixed"
        instead = "pass fmt='csv' or 'tsv' for a table with named columns"
    given = [name for name, value in named.items() if value is not None]
    if given:
        raise ValueError(
            f"{path}: {', '.join(given)} name columns, but {layout}; drop them or {instead}"
        )


def _read_table(path: str | Path, data: bytes, fmt: str) -> pl.DataFrame:
    """The raw columns (all Utf8 for text formats) plus ``_line``, the line of each row."""
    if fmt == "parquet":
        try:
            raw = pl.read_parquet(io.BytesIO(data))
        except Exception as err:  # polars raises several unrelated types for bad files
            reason = f"not a readable parquet file ({_first_line(err)})"
            raise DataFormatError(path, reason) from None
        # Parquet has no text lines: report 1-based row numbers instead.
        return raw.with_row_index("_line", offset=1)

    separator = "," if fmt == "csv" else "\t"
    # Tab-separated files in the wild do not quote; a stray '"' must not swallow lines.
    quote_char = '"' if fmt == "csv" else None
    _check_header(path, data, separator, quote_char)
    try:
        raw = pl.read_csv(
            io.BytesIO(data),
            separator=separator,
            quote_char=quote_char,
            infer_schema=False,  # every column as Utf8: ids are never parsed as numbers
            raise_if_empty=True,
        )
    except Exception as err:
        line = _ragged_line(data, separator, quote_char)
        raise DataFormatError(
            path, f"cannot parse as {fmt} ({_first_line(err)})", line=line
        ) from None
    if fmt == "recbole":
        raw = raw.rename({c: c.rsplit(":", 1)[0] for c in raw.columns})
    # Line numbers assume one record per physical line (no quoted newlines); header is line 1.
    raw = raw.with_row_index("_line", offset=2)
    is_blank = pl.all_horizontal(pl.exclude("_line").is_null())
    return raw.filter(~is_blank)


def _standardise(
    path: str | Path,
    raw: pl.DataFrame,
    id_cols: dict[str, str],
    time_col: str | None,
    rating_col: str | None,
) -> pl.DataFrame:
    """Select and type the user/item/timestamp/rating columns of a raw table."""
    found = [c for c in raw.columns if c != "_line"]
    for role, name in [*id_cols.items(), ("timestamp", time_col)]:
        if name is not None and name not in found:
            hint = ""
            if role == "timestamp":
                hint = " (pass time_col=None for a file without timestamps)"
            raise DataFormatError(
                path, f"missing {role} column {name!r}; columns found: {found}{hint}"
            )
    lines = raw["_line"]

    out = {}
    for role, name in id_cols.items():
        ids = raw[name].cast(pl.Utf8)
        _fail_at_first(path, lines, ids.is_null() | (ids == ""), ids, f"empty {role} id")
        out[role] = ids.alias(role)

    if time_col is None:
        out["timestamp"] = pl.Series("timestamp", [None] * raw.height, dtype=pl.Null)
    else:
        seconds = _parse_timestamps(path, raw[time_col], lines)
        outside = (seconds < MIN_TIMESTAMP) | (seconds >= MAX_TIMESTAMP)
        reason = f"timestamp out of range ({TIMESTAMP_RANGE})"
        _fail_at_first(path, lines, outside, raw[time_col], reason)
        out["timestamp"] = seconds

    if rating_col is not None and rating_col in found:
        values = raw[rating_col].cast(pl.Utf8).str.strip_chars()
        ratings = values.cast(pl.Float64, strict=False)
        bad = ratings.is_null() & values.is_not_null()
        _fail_at_first(path, lines, bad, values, "unparsable rating")
        out["rating"] = ratings.alias("rating")
    return pl.DataFrame(out)


def _parse_timestamps(path: str | Path, column: pl.Series, lines: pl.Series) -> pl.Series:
    """Unix seconds from numbers or ISO-8601 datetimes (naive datetimes are taken as UTC).

    The first value decides the kind, so one stray value is reported as itself rather than
    turning every number into a failed datetime. Integer seconds stay Int64; fractional
    numbers and datetimes with sub-second parts become Float64 seconds.
    """
    if column.dtype.is_numeric():
        bad = column.is_null() | ~column.cast(pl.Float64).is_finite()
        _fail_at_first(path, lines, bad, column, "unparsable timestamp")
        return column.cast(pl.Int64 if column.dtype.is_integer() else pl.Float64).alias("timestamp")
    if column.dtype == pl.Datetime or column.dtype == pl.Date:
        _fail_at_first(path, lines, column.is_null(), column, "empty timestamp")
        return _seconds(column.cast(pl.Datetime("us")).dt.epoch("us"))

    text = column.cast(pl.Utf8).str.strip_chars()
    _fail_at_first(path, lines, text.is_null() | (text == ""), text, "empty timestamp")
    as_int = text.cast(pl.Int64, strict=False)
    if as_int.null_count() == 0:
        return as_int.alias("timestamp")
    as_float = text.cast(pl.Float64, strict=False)
    first_is_number = as_float[0] is not None
    if first_is_number:
        bad = as_float.is_null() | ~as_float.is_finite()
        _fail_at_first(path, lines, bad, text, "unparsable timestamp (expected unix seconds)")
        return as_float.alias("timestamp")
    return _seconds(_parse_datetimes(path, text, lines))


def _parse_datetimes(path: str | Path, text: pl.Series, lines: pl.Series) -> pl.Series:
    """Epoch microseconds (Int64) of ISO-8601 strings.

    Only ISO-8601 is accepted: an inferred pattern could read ``01/02/2020`` day first and
    silently mis-sort a month-first file.
    """
    # TODO(#4): parsing each distinct value in Python is fine for Amazon-sized logs only.
    parsed = {value: _iso_to_micros(value) for value in text.unique().to_list()}
    micros = text.replace_strict(parsed, default=None, return_dtype=pl.Int64)
    _fail_at_first(path, lines, micros.is_null(), text, "unparsable timestamp (not ISO-8601)")
    return micros


def _iso_to_micros(value: str) -> int | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _seconds(micros: pl.Series) -> pl.Series:
    if (micros % 1_000_000 == 0).all():
        return (micros // 1_000_000).cast(pl.Int64).alias("timestamp")
    return (micros.cast(pl.Float64) / 1e6).alias("timestamp")


def _read_sequence(
    path: str | Path, data: bytes, skip_bad_lines: bool
) -> tuple[pl.DataFrame, SkippedLines]:
    """``user item item ...`` per line; repeated users are concatenated in file order."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(path, f"not UTF-8 text ({err})") from None
    lines = pl.DataFrame({"text": text.split("\n")}).with_row_index("_line", offset=1)
    tokens = lines.with_columns(pl.col("text").str.extract_all(r"\S+").alias("tokens"))
    tokens = tokens.filter(pl.col("tokens").list.len() > 0)  # blank lines carry nothing
    lonely = tokens["tokens"].list.len() == 1
    skipped = SkippedLines()
    if skip_bad_lines and lonely.any():
        bad = tokens.filter(lonely)
        examples = tuple(
            f"line {line}: user has no items: {user!r}"
            for line, user in zip(
                bad["_line"].head(MAX_EXAMPLES),
                bad["tokens"].list.first().head(MAX_EXAMPLES),
                strict=True,
            )
        )
        skipped = SkippedLines(bad.height, examples)
        tokens = tokens.filter(~lonely)
    else:
        users = tokens["tokens"].list.first()
        _fail_at_first(path, tokens["_line"], lonely, users, "user has no items")
    df = (
        tokens.select(
            pl.col("tokens").list.first().alias("user"),
            pl.col("tokens").list.slice(1).alias("item"),
        )
        .explode("item")
        .with_columns(pl.lit(None, dtype=pl.Null).alias("timestamp"))
    )
    return df, skipped


def _ragged_line(data: bytes, separator: str, quote_char: str | None) -> int | None:
    """Line of the first record whose field count differs from the header (error path only)."""
    text = data.decode("utf-8", errors="replace")
    if quote_char is None:
        reader = csv.reader(io.StringIO(text), delimiter=separator, quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text), delimiter=separator, quotechar=quote_char)
    try:
        n_fields = len(next(reader))
        last_line_read = reader.line_num
        for record in reader:
            # A record with an unclosed quote spans several lines: report where it starts.
            if record and len(record) != n_fields:
                return last_line_read + 1
            last_line_read = reader.line_num
    except (StopIteration, csv.Error):
        pass
    return None


def _check_header(path: str | Path, data: bytes, separator: str, quote_char: str | None) -> None:
    """A column named twice would be renamed silently by the parser: refuse it instead."""
    first_line = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
    if quote_char is None:
        header = next(csv.reader([first_line], delimiter=separator, quoting=csv.QUOTE_NONE))
    else:
        header = next(csv.reader([first_line], delimiter=separator, quotechar=quote_char))
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataFormatError(path, f"column {name!r} appears twice in the header", line=1)
        seen.add(name)


def _fail_at_first(
    path: str | Path, lines: pl.Series, bad: pl.Series, values: pl.Series, reason: str
) -> None:
    """Raise DataFormatError at the first row where ``bad`` holds, quoting its value."""
    if not bad.any():
        return
    row = int(bad.arg_true()[0])
    value = values[row]
    # A missing field has no value to quote; the reason ("empty ...") says it all.
    message = reason if value is None else f"{reason}: {value!r}"
    raise DataFormatError(path, message, line=int(lines[row]))


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
