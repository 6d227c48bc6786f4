"""Bad input for every reader: the error names file, line and reason; skip_bad_lines counts.

Each case writes two good lines, the bad line (line 3) and one more good line, in the
format's published layout, so the error must point at line 3 and skipping must keep the
three good rows.
"""

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from mrif.data.checks import DataFormatError, SkippedLines
from mrif.data.readers import read_interactions, read_interactions_with_skips, source_sha256

LineMaker = Callable[[object, object, object, object], str]


def ratings_csv(user, item, rating, ts) -> str:
    return f"{user},{item},{rating},{ts}"


def review_2014(user, item, rating, ts) -> str:
    record = {"reviewerID": user, "asin": item, "reviewerName": "R", "helpful": [0, 0]}
    return json.dumps(record | {"overall": rating, "unixReviewTime": ts, "reviewTime": "x"})


def review_2023(user, item, rating, ts) -> str:
    record = {"rating": rating, "title": "t", "text": "x", "images": [], "asin": item}
    return json.dumps(record | {"parent_asin": item, "user_id": user, "timestamp": ts})


def ratings_dat(user, item, rating, ts) -> str:
    return f"{user}::{item}::{rating}::{ts}"


def u_data(user, item, rating, ts) -> str:
    return f"{user}\t{item}\t{rating}\t{ts}"


# fmt -> (file name, line maker, a good timestamp in the format's unit)
LAYOUTS: dict[str, tuple[str, LineMaker, int]] = {
    "amazon-ratings": ("ratings_Electronics.csv", ratings_csv, 1395651600),
    "amazon-reviews": ("reviews_Electronics_5.json", review_2014, 1395651600),
    "amazon-2023": ("Electronics.jsonl", review_2023, 1395651600000),
    "movielens-dat": ("ratings.dat", ratings_dat, 978300760),
    "movielens-udata": ("u.data", u_data, 881250949),
}
SECONDS_FORMATS = ["amazon-ratings", "amazon-reviews", "movielens-dat", "movielens-udata"]


def good_lines(fmt: str) -> list[str]:
    _, make, ts = LAYOUTS[fmt]
    return [make(f"u{n}", f"i{n}", 4.0, ts + n) for n in range(3)]


def write_with_bad_line(tmp_path: Path, fmt: str, bad: str) -> Path:
    name, _, _ = LAYOUTS[fmt]
    first, second, last = good_lines(fmt)
    path = tmp_path / name
    path.write_text("\n".join([first, second, bad, last]) + "\n")
    return path


def bad_line(fmt: str, *, user="u9", item="i9", rating=4.0, ts=None) -> str:
    _, make, good_ts = LAYOUTS[fmt]
    return make(user, item, rating, good_ts if ts is None else ts)


def assert_fails_at_line_3(path: Path, fmt: str, reason: str) -> None:
    with pytest.raises(DataFormatError) as info:
        read_interactions(path, fmt=fmt)
    assert info.value.line == 3
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}, line 3: ")
    assert reason in info.value.reason


def assert_skips_line_3(path: Path, fmt: str, reason: str) -> None:
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        df, skipped = read_interactions_with_skips(path, fmt=fmt, skip_bad_lines=True)
    assert df["user"].to_list() == ["u0", "u1", "u2"]
    assert df["order"].to_list() == [0, 1, 2]
    assert skipped.count == 1
    assert skipped.examples[0].startswith("line 3: ") and reason in skipped.examples[0]


# (fmt, bad line, reason): malformed lines, missing or renamed keys, bad ids and ratings.
MALFORMED = [
    ("amazon-ratings", "u9,i9,4.0", "expected 4 fields separated by ','"),
    ("amazon-ratings", "u9,i9,4.0,1395651600,extra", "(user, item, rating, timestamp); got 5"),
    ("amazon-reviews", '{"reviewerID": "u9", "asin": ', "neither a JSON object nor a Python"),
    ("amazon-reviews", '["u9", "i9", 4.0, 1395651600]', "expected one object per line; got a list"),
    ("amazon-2023", '{"user_id": "u9", "parent_asin": ', "not a JSON object"),
    # Python literals are a 2014 quirk; the 2023 files are strict JSON.
    (
        "amazon-2023",
        "{'user_id': 'u9', 'parent_asin': 'i9', 'rating': 4.0, 'timestamp': 1}",
        "not a JSON object",
    ),
    ("movielens-dat", "9::19::4", "expected 4 fields separated by '::'"),
    ("movielens-dat", "9,19,4,978300760", "got 1"),
    ("movielens-udata", "9 19 4 881250949", "expected 4 fields separated by '\\t'"),
]
RENAMED_KEYS = [
    (
        "amazon-reviews",
        json.dumps(
            {"reviewer_id": "u9", "asin": "i9", "overall": 4.0, "unixReviewTime": 1395651600}
        ),
        "missing key(s) 'reviewerID'; keys found: reviewer_id, asin, overall, unixReviewTime",
    ),
    (
        "amazon-reviews",
        json.dumps({"reviewerID": "u9", "asin": "i9", "overall": 4.0, "reviewTime": "x"}),
        "missing key(s) 'unixReviewTime'",
    ),
    ("amazon-reviews", review_2023("u9", "i9", 4.0, 1395651600000), "layout (fmt='amazon-2023')"),
    ("amazon-2023", review_2014("u9", "i9", 4.0, 1395651600), "layout (fmt='amazon-reviews')"),
    (
        "amazon-2023",
        json.dumps({"user_id": "u9", "asin": "i9", "rating": 4.0, "timestamp": 1395651600000}),
        "missing key(s) 'parent_asin'",
    ),
]
BAD_VALUES = [
    *[(fmt, bad_line(fmt, user=""), "empty user id") for fmt in LAYOUTS],
    *[(fmt, bad_line(fmt, rating="five"), "unparsable rating: 'five'") for fmt in LAYOUTS],
    ("amazon-reviews", bad_line("amazon-reviews", item=None), "item id must be a string; got None"),
    ("amazon-reviews", bad_line("amazon-reviews", item=1.5), "item id must be a string"),
    ("amazon-2023", bad_line("amazon-2023", rating=None), "rating must be a number; got None"),
    ("amazon-reviews", bad_line("amazon-reviews", rating=float("nan")), "rating must be finite"),
]


@pytest.mark.parametrize(("fmt", "bad", "reason"), MALFORMED + RENAMED_KEYS + BAD_VALUES)
def test_bad_line_names_file_line_reason_or_is_skipped(tmp_path, fmt, bad, reason):
    path = write_with_bad_line(tmp_path, fmt, bad)
    assert_fails_at_line_3(path, fmt, reason)
    assert_skips_line_3(path, fmt, reason)


# Timestamps: non-numeric, fractional, negative, 2100 or later (the bound), milliseconds.
BAD_SECONDS = [
    ("yesterday", "unparsable timestamp"),
    (-1, "timestamp out of range"),
    (4102444800, "timestamp out of range"),  # 2100-01-01T00:00:00Z, the first refused second
    (1395651600000, "timestamp out of range"),  # milliseconds read as seconds
]


@pytest.mark.parametrize("fmt", SECONDS_FORMATS)
@pytest.mark.parametrize(("ts", "reason"), BAD_SECONDS)
def test_bad_timestamps_in_seconds_formats(tmp_path, fmt, ts, reason):
    path = write_with_bad_line(tmp_path, fmt, bad_line(fmt, ts=ts))
    assert_fails_at_line_3(path, fmt, reason)
    assert_skips_line_3(path, fmt, reason)


def test_last_second_before_2100_is_accepted(tmp_path):
    path = write_with_bad_line(tmp_path, "movielens-udata", u_data("u9", "i9", 4, 4102444799))
    assert read_interactions(path)["timestamp"].to_list()[2] == 4102444799


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        (1395651600.5, "timestamp must be a whole number"),
        ("1395651600", None),  # digits in a string are accepted
        (True, "timestamp must be a whole number"),
    ],
)
def test_json_timestamp_types(tmp_path, ts, reason):
    path = write_with_bad_line(tmp_path, "amazon-reviews", bad_line("amazon-reviews", ts=ts))
    if reason is None:
        assert read_interactions(path)["timestamp"].to_list()[2] == 1395651600
    else:
        assert_fails_at_line_3(path, "amazon-reviews", reason)


@pytest.mark.parametrize(
    ("ms", "reason"),
    [
        ("yesterday", "unparsable timestamp"),
        (-1000, "timestamp out of range (milliseconds must be in [0, 4102444800000)"),
        (4102444800000, "timestamp out of range"),
        (1395651600, "it looks like seconds"),
    ],
)
def test_bad_millisecond_timestamps_in_2023_files(tmp_path, ms, reason):
    path = write_with_bad_line(tmp_path, "amazon-2023", bad_line("amazon-2023", ts=ms))
    assert_fails_at_line_3(path, "amazon-2023", reason)
    assert_skips_line_3(path, "amazon-2023", reason)


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_line_that_is_not_utf8(tmp_path, fmt):
    name = LAYOUTS[fmt][0]
    first, second, last = good_lines(fmt)
    path = tmp_path / name
    path.write_bytes(f"{first}\n{second}\n".encode() + b"\xff\xfe caf\xe9\n" + f"{last}\n".encode())
    assert_fails_at_line_3(path, fmt, "not UTF-8 text")
    assert_skips_line_3(path, fmt, "not UTF-8 text")


@pytest.mark.parametrize("fmt", ["amazon-ratings", "movielens-dat", "movielens-udata"])
def test_a_header_line_gets_a_hint(tmp_path, fmt):
    name, make, ts = LAYOUTS[fmt]
    header = make("user", "item", "rating", "timestamp")
    path = tmp_path / name
    path.write_text(f"{header}\n{make('u0', 'i0', 4.0, ts)}\n")
    with pytest.raises(DataFormatError) as info:
        read_interactions(path, fmt=fmt)
    assert info.value.line == 1
    assert f"unparsable rating: 'rating' (the {fmt} layout has no header line" in str(info.value)


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_empty_and_blank_files(tmp_path, fmt):
    name = LAYOUTS[fmt][0]
    for text in ("", "\n\n  \n"):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DataFormatError, match=f"{path.name}: file is empty"):
            read_interactions(path, fmt=fmt)


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_every_line_bad_is_an_error_even_when_skipping(tmp_path, fmt):
    path = tmp_path / LAYOUTS[fmt][0]
    path.write_text("garbage\nmore garbage\n")
    with pytest.raises(DataFormatError) as info:
        read_interactions(path, fmt=fmt, skip_bad_lines=True)
    assert info.value.line is None
    expected = "no interactions: every line is bad (skipped 2 bad line(s); first: line 1: "
    assert info.value.reason.startswith(expected)
    assert "; line 2: " in info.value.reason


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_byte_order_mark_is_accepted(tmp_path, fmt):
    path = tmp_path / LAYOUTS[fmt][0]
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(good_lines(fmt)) + "\n").encode())
    assert read_interactions(path, fmt=fmt)["user"].to_list() == ["u0", "u1", "u2"]


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_truncated_gzip_names_where_reading_stopped(tmp_path, fmt):
    name, make, ts = LAYOUTS[fmt]
    lines = [make(f"user{n:05d}", f"item{n % 97}", 4.0, ts + n) for n in range(20_000)]
    packed = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / f"{name}.gz"
    path.write_bytes(packed[: len(packed) // 2])

    for skip in (False, True):  # a lost tail cannot be counted, so skipping does not help
        with pytest.raises(DataFormatError) as info:
            read_interactions(path, fmt=fmt, skip_bad_lines=skip)
        assert "corrupt or truncated gzip data after line" in info.value.reason
        assert info.value.line is not None and 1 < info.value.line <= 20_000
        assert str(info.value).startswith(f"{path}, line {info.value.line}: ")


def test_gzip_cut_in_its_trailer_is_still_an_error(tmp_path):
    path = tmp_path / "u.data.gz"
    path.write_bytes(gzip.compress("\n".join(good_lines("movielens-udata")).encode())[:-4])
    with pytest.raises(DataFormatError, match=r"u\.data\.gz, line 3: corrupt or truncated gzip"):
        read_interactions(path)


def test_skipping_reports_each_bad_line(tmp_path):
    lines = good_lines("movielens-dat")
    text = "\n".join(["1::2", lines[0], "x::y::z::w", lines[1], "", "1::2::3::-5", lines[2]])
    path = tmp_path / "ratings.dat"
    path.write_text(text + "\n")

    with pytest.raises(DataFormatError, match=r"ratings\.dat, line 1: expected 4 fields"):
        read_interactions(path)
    with pytest.warns(UserWarning, match=r"ratings\.dat: skipped 3 bad line\(s\); first: line 1"):
        df, skipped = read_interactions_with_skips(path, skip_bad_lines=True)
    assert df["user"].to_list() == ["u0", "u1", "u2"]
    assert skipped.count == 3
    assert [example.split(":")[0] for example in skipped.examples] == [
        "line 1",
        "line 3",
        "line 6",
    ]
    assert "unparsable rating: 'z'" in skipped.examples[1]
    assert "timestamp out of range" in skipped.examples[2]


def test_skip_report_keeps_only_the_first_examples(tmp_path):
    lines = good_lines("movielens-udata") + ["bad"] * 12
    path = tmp_path / "u.data"
    path.write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning):
        _, skipped = read_interactions_with_skips(path, skip_bad_lines=True)
    assert skipped.count == 12
    assert [example.split(":")[0] for example in skipped.examples] == [
        f"line {n}" for n in range(4, 9)
    ]


# The table and sequence readers share the timestamp range, the BOM rule and gzip checks.


@pytest.mark.parametrize(
    ("good", "value"),
    [
        ("1", "-1"),
        ("1", "1395651600000"),  # milliseconds read as seconds
        ("2014-01-01", "1969-12-31T23:59:59Z"),
        ("2014-01-01", "2100-01-01"),
    ],
)
def test_tables_check_the_timestamp_range(tmp_path, good, value):
    path = tmp_path / "log.csv"
    path.write_text(f"user,item,timestamp\nu,a,{good}\nu,b,{value}\nu,c,{good}\n")
    with pytest.raises(DataFormatError) as info:
        read_interactions(path)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}, line 3: timestamp out of range")
    assert str(info.value).endswith(repr(value))  # the value as written in the file
    good_only = tmp_path / "good.csv"
    good_only.write_text(f"user,item,timestamp\nu,a,{good}\n")
    assert read_interactions(good_only).height == 1


def test_tables_accept_a_byte_order_mark(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"\xef\xbb\xbfuser,item,timestamp\nu,a,1\n")
    assert read_interactions(path)["user"].to_list() == ["u"]


def test_truncated_gzip_table_names_the_line(tmp_path):
    rows = "".join(f"u{n},i{n % 50},{1000 + n}\n" for n in range(20_000))
    packed = gzip.compress(("user,item,timestamp\n" + rows).encode())
    path = tmp_path / "log.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataFormatError) as info:
        read_interactions(path)
    assert "corrupt or truncated gzip data after line" in info.value.reason
    assert info.value.line is not None and 1 < info.value.line < 20_001


# Tables: the same rules, four rows of which the third is bad (line 4 of a text table).
TABLES = {
    "csv": ("log.csv", ","),
    "tsv": ("log.tsv", "\t"),
    "recbole": ("log.inter", "\t"),
    "csv.gz": ("log.csv.gz", ","),
}
TABLE_ROWS = [("u0", "a", "1", "5"), ("u1", "b", "2", "4"), None, ("u2", "c", "3", "3")]
BAD_TABLE_ROWS = [
    (("", "x", "9", "5"), "empty user id"),
    (("u9", "", "9", "5"), "empty item id"),
    (("u9", "x", "", "5"), "empty timestamp"),
    (("u9", "x", "yesterday", "5"), "unparsable timestamp (expected unix seconds): 'yesterday'"),
    (("u9", "x", "-1", "5"), "timestamp out of range (unix seconds must be in [0, "),
    (("u9", "x", "4102444800", "5"), "1970 to 2100 UTC; a value past 2100 is usually"),
    (("u9", "x", "9", "five"), "unparsable rating: 'five'"),
]


def write_table(tmp_path: Path, layout: str, bad: tuple[str, ...]) -> Path:
    name, separator = TABLES[layout]
    header = ["user", "item", "timestamp", "rating"]
    if layout == "recbole":
        header = ["user_id:token", "item_id:token", "timestamp:float", "rating:float"]
    rows = [separator.join(header)] + [separator.join(row or bad) for row in TABLE_ROWS]
    data = ("\n".join(rows) + "\n").encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("layout", list(TABLES))
@pytest.mark.parametrize(("bad", "reason"), BAD_TABLE_ROWS)
def test_bad_table_row_names_file_line_reason_or_is_skipped(tmp_path, layout, bad, reason):
    path = write_table(tmp_path, layout, bad)
    with pytest.raises(DataFormatError) as info:
        read_interactions(path)
    assert (info.value.path, info.value.line) == (str(path), 4)
    assert reason in info.value.reason

    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        df, skipped = read_interactions_with_skips(path, skip_bad_lines=True)
    assert df["user"].to_list() == ["u0", "u1", "u2"]
    assert df["timestamp"].to_list() == [1, 2, 3] and df["timestamp"].dtype == pl.Int64
    assert df["order"].to_list() == [0, 1, 2]
    assert skipped.count == 1
    assert skipped.examples[0].startswith("line 4: ") and reason in skipped.examples[0]


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("user", None, "empty user id"),
        ("item", "", "empty item id: ''"),
        ("timestamp", None, "unparsable timestamp"),
        ("timestamp", 4102444800, "timestamp out of range"),
    ],
)
def test_bad_parquet_row_is_named_by_row_number_or_skipped(tmp_path, column, value, reason):
    frame = {
        "user": ["u0", "u1", "u9", "u2"],
        "item": ["a", "b", "x", "c"],
        "timestamp": [1, 2, 9, 3],
    }
    frame[column][2] = value
    path = tmp_path / "log.parquet"
    pl.DataFrame(frame).write_parquet(path)
    with pytest.raises(DataFormatError) as info:
        read_interactions(path)
    assert info.value.line == 3 and reason in info.value.reason  # row 3, counting from 1

    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        df, skipped = read_interactions_with_skips(path, skip_bad_lines=True)
    assert df["user"].to_list() == ["u0", "u1", "u2"]
    assert skipped.count == 1 and skipped.examples[0].startswith(f"line 3: {reason}")


def test_skipping_table_lines_the_parser_cannot_split(tmp_path):
    """Lines with too many fields or bytes that are not UTF-8 are dropped before the scan;
    a bad value after them is still reported at its own line."""
    path = tmp_path / "log.csv"
    path.write_bytes(
        b"user,item,timestamp\n"  # line 1
        b"u0,a,1\n"
        b"u1,b,2,extra\n"  # line 3: four fields
        b"u2,c,3\n"
        b"\xff\xfe,d,4\n"  # line 5: not UTF-8
        b'u3,"e,5\n'  # line 6: an unclosed quote swallows the comma
        b"u4,,6\n"  # line 7: empty item id
        b"u5,f,7\n"
    )
    with pytest.raises(DataFormatError) as info:
        read_interactions(path)
    assert info.value.line == 3 and info.value.reason.startswith("cannot parse as csv (")

    with pytest.warns(UserWarning, match="skipped 4 bad line"):
        df, skipped = read_interactions_with_skips(path, skip_bad_lines=True)
    assert df["user"].to_list() == ["u0", "u2", "u5"]
    assert df["timestamp"].to_list() == [1, 3, 7]
    assert [example.split(":")[0] for example in skipped.examples] == [
        "line 3",
        "line 5",
        "line 6",
        "line 7",
    ]
    assert "expected 3 fields separated by ',' (as in the header); got 4" in skipped.examples[0]
    assert "not UTF-8 text" in skipped.examples[1]
    assert skipped.examples[3] == "line 7: empty item id"


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_bytes(b"user\titem\ttimestamp\nu0\ta\t1\nu1\t\xe9\t2\n")
    with pytest.raises(DataFormatError, match=r"log\.tsv, line 3: cannot parse as tsv"):
        read_interactions(path)


def test_skipping_tables_ignores_blank_lines_and_keeps_whole_seconds(tmp_path):
    # The first value does not decide the column's kind when it is itself the bad one.
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\nu0,a,yesterday\n\nu1,b,5\n,,\nu2,c,6\n")
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        df, skipped = read_interactions_with_skips(path, skip_bad_lines=True)
    assert df["timestamp"].to_list() == [5, 6] and df["timestamp"].dtype == pl.Int64
    assert skipped.examples == (
        "line 2: unparsable timestamp (expected unix seconds): 'yesterday'",
    )


def test_a_table_whose_every_row_is_bad_is_an_error_even_when_skipping(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\n,a,1\nu,b,-5\n")
    with pytest.raises(DataFormatError) as info:
        read_interactions(path, skip_bad_lines=True)
    assert info.value.reason.startswith("no interactions: every line is bad (skipped 2 bad")


def test_sequence_files_skip_users_without_items(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("u1 a b\nu2\nu3 c\nu4\n")
    with pytest.raises(DataFormatError, match=r"s\.txt, line 2: user has no items: 'u2'"):
        read_interactions(path)
    with pytest.warns(UserWarning, match="skipped 2 bad line"):
        df, skipped = read_interactions_with_skips(path, skip_bad_lines=True)
    assert df["user"].to_list() == ["u1", "u1", "u3"]
    assert skipped == SkippedLines(
        2, ("line 2: user has no items: 'u2'", "line 4: user has no items: 'u4'")
    )


def test_checksum_of_a_truncated_gzip_names_the_line(tmp_path):
    path = tmp_path / "u.data.gz"
    lines = "".join(u_data(f"u{n}", f"i{n}", 3, 881250949 + n) + "\n" for n in range(20_000))
    packed = gzip.compress(lines.encode())
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataFormatError) as info:
        source_sha256(path)
    assert "corrupt or truncated gzip data after line" in info.value.reason
    assert info.value.line is not None and 1 < info.value.line <= 20_000
