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
``skip_bad_lines`` every format drops bad lines (rows, for Parquet) instead and reports how
many (``read_interactions_with_skips``).

Tables are scanned lazily in one streaming pass (``tables.py``) and the line formats parsed
in chunks (``lines.py``); either way ids become integer codes as they are read
(``codes.py``), so ``read_encoded``, what ``prepare_dataset`` reads with, never holds a Python
object or a string per row. ``read_interactions`` decodes them back into the frame above.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import warnings
import zlib
from pathlib import Path

import polars as pl

from mrif.data import amazon, movielens
from mrif.data.checks import MAX_EXAMPLES, DataFormatError, SkippedLines
from mrif.data.codes import EncodedInteractions, encode_ids, id_dtype
from mrif.data.lines import GZIP_MAGIC, UTF8_BOM, BadLine, LineParser, iter_lines, read_lines
from mrif.data.tables import TABLE_FORMATS, TableColumns, read_table
from mrif.data.timestamps import WHOLE_SECONDS

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
FORMATS = (*TABLE_FORMATS, "sequence", *LINE_FORMATS)
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

    ``skip_bad_lines`` drops bad lines (Parquet: rows), with a warning that counts them,
    instead of failing at the first; ``read_interactions_with_skips`` also returns the count.
    A truncated gzip file fails even then: its lost tail cannot be counted.
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
    encoded, skipped = read_encoded(
        path, fmt=fmt, user_col=user_col, item_col=item_col, time_col=time_col,
        rating_col=rating_col, skip_bad_lines=skip_bad_lines,
    )  # fmt: skip
    df = encoded.decoded()
    return df.with_columns(pl.int_range(df.height, dtype=pl.Int64).alias("order")), skipped


def read_encoded(
    path: str | Path,
    *,
    fmt: str | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = "timestamp",
    rating_col: str | None = "rating",
    skip_bad_lines: bool = False,
    keep_rating: bool = True,
) -> tuple[EncodedInteractions, SkippedLines]:
    """Read ``path`` as ``read_interactions_with_skips`` does, ids as codes (``codes.py``).

    The frame has no ``order`` column: it is in file order. ``keep_rating=False`` drops the
    ratings after checking them (they never rank, rule 1, and cost memory at scale).
    """
    fmt = detect_format(path) if fmt is None else fmt
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)} or None; got {fmt!r}")

    skipped = SkippedLines()
    if fmt in LINE_FORMATS:
        _refuse_column_names(path, fmt, user_col, item_col, time_col, rating_col)
        parse, headerless = LINE_FORMATS[fmt]
        hint = _NO_HEADER.format(fmt=fmt) if headerless else None
        user_dtype, item_dtype = id_dtype(), id_dtype()

        def as_codes(chunk: pl.DataFrame) -> pl.DataFrame:
            ids = pl.col("user").cast(user_dtype), pl.col("item").cast(item_dtype)
            return chunk.with_columns(*ids, pl.col("timestamp").cast(WHOLE_SECONDS))

        df, skipped = read_lines(
            path, parse, skip_bad_lines=skip_bad_lines, header_hint=hint, convert=as_codes
        )
        if rating_col is None or not keep_rating:
            df = df.drop("rating")
    elif fmt == "sequence":
        _refuse_column_names(path, fmt, user_col, item_col, time_col, rating_col)
        data = read_source_bytes(path)
        if data.startswith(UTF8_BOM):
            data = data[len(UTF8_BOM) :]
        if not data.strip():
            raise DataFormatError(path, "file is empty")
        df, skipped = _read_sequence(path, data, skip_bad_lines)
    else:
        defaults = _RECBOLE_DEFAULTS if fmt == "recbole" else _TABLE_DEFAULTS
        columns = TableColumns(
            user=user_col or defaults["user_col"],
            item=item_col or defaults["item_col"],
            time=time_col,
            rating=rating_col,
        )
        df, skipped = read_table(
            path, fmt, columns, skip_bad_lines=skip_bad_lines, keep_rating=keep_rating
        )

    if df.height == 0:
        if skipped.count:
            raise DataFormatError(path, f"no interactions: every line is bad ({skipped.summary()})")
        raise DataFormatError(path, "no interactions (only a header or blank lines)")
    if skipped.count:
        warnings.warn(f"{path}: {skipped.summary()}", stacklevel=4)
    return encode_ids(df), skipped


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


def _read_sequence(
    path: str | Path, data: bytes, skip_bad_lines: bool
) -> tuple[pl.DataFrame, SkippedLines]:
    """``user item item ...`` per line; repeated users are concatenated in file order."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(path, f"not UTF-8 text ({err})") from None
    # One polars string split into lines: no Python object per line.
    lines = pl.Series("text", [text]).str.split("\n").explode().to_frame()
    lines = lines.with_row_index("_line", offset=1)
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
