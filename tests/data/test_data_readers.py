"""Readers: every format, string ids, timestamps, gzip, and errors that name file and line."""

import gzip
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mrif.data.readers import DataFormatError, detect_format, read_interactions, source_sha256
from mrif.data.timestamps import iso_to_micros


def write(path: Path, text: str, *, gz: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_csv_keeps_string_ids_and_file_order(tmp_path):
    long_id = "1234567890123456789"  # 19 digits: a float64 would round it
    path = write(
        tmp_path / "a.csv",
        f"user,item,timestamp,rating\n007,7,30,5\n7,007,10,\n{long_id},{long_id},20,4.5\n",
    )
    df = read_interactions(path)

    assert df.columns == ["user", "item", "timestamp", "rating", "order"]
    assert df["user"].to_list() == ["007", "7", long_id]
    assert df["item"].to_list() == ["7", "007", long_id]
    assert df["timestamp"].dtype == pl.Int64
    assert df["timestamp"].to_list() == [30, 10, 20]
    assert df["rating"].to_list() == [5.0, None, 4.5]
    assert df["order"].to_list() == [0, 1, 2]


def test_tsv_with_custom_columns_and_no_rating(tmp_path):
    path = write(tmp_path / "a.tsv", "uid\tiid\ttime\n1\t2\t1.5\n1\t3\t2.25\n")
    df = read_interactions(path, user_col="uid", item_col="iid", time_col="time")

    assert df.columns == ["user", "item", "timestamp", "order"]
    assert df["timestamp"].dtype == pl.Float64
    assert df["timestamp"].to_list() == [1.5, 2.25]


def test_table_without_timestamps(tmp_path):
    path = write(tmp_path / "a.csv", "user,item\nu,a\nu,b\n")
    df = read_interactions(path, time_col=None)
    assert df["timestamp"].dtype == pl.Null
    assert df["item"].to_list() == ["a", "b"]


def test_iso_timestamps_become_unix_seconds(tmp_path):
    path = write(
        tmp_path / "a.csv",
        "user,item,timestamp\n"
        "u,a,1970-01-02\n"
        "u,b,1970-01-01T00:01:00\n"
        "u,c,1970-01-01T02:00:00+02:00\n"
        "u,d,1970-01-01T00:00:05Z\n",
    )
    df = read_interactions(path)
    assert df["timestamp"].dtype == pl.Int64
    assert df["timestamp"].to_list() == [86400, 60, 0, 5]


def test_parquet_ids_read_as_strings(tmp_path):
    path = tmp_path / "a.parquet"
    pl.DataFrame({"user": [1, 2], "item": ["007", "7"], "timestamp": [5, 6]}).write_parquet(path)
    df = read_interactions(path)
    assert df["user"].to_list() == ["1", "2"]
    assert df["item"].to_list() == ["007", "7"]
    assert df["timestamp"].to_list() == [5, 6]


def test_sequence_file_concatenates_repeated_users(tmp_path):
    # The BERT4Rec layout (one "user item" pair per line) is the same format.
    path = write(tmp_path / "s.txt", "u1 007 7\n\nu2  x\tz\nu1 9\n")
    df = read_interactions(path)

    assert df["timestamp"].dtype == pl.Null
    assert df["user"].to_list() == ["u1", "u1", "u2", "u2", "u1"]
    assert df["item"].to_list() == ["007", "7", "x", "z", "9"]
    assert df["order"].to_list() == [0, 1, 2, 3, 4]


def test_recbole_inter_strips_type_suffix(tmp_path):
    path = write(
        tmp_path / "ml.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n",
    )
    df = read_interactions(path)
    assert df.row(0) == ("196", "242", 881250949, 3.0, 0)


def test_gzip_is_transparent_and_checksummed_decompressed(tmp_path):
    text = "u1 a b c\n"
    plain = write(tmp_path / "s.txt", text)
    packed = write(tmp_path / "s.txt.gz", text, gz=True)
    assert read_interactions(packed).equals(read_interactions(plain))
    assert source_sha256(packed) == source_sha256(plain)


def test_gzip_detected_by_magic_bytes(tmp_path):
    path = write(tmp_path / "s.txt", "u1 a b\n", gz=True)  # no .gz suffix
    assert read_interactions(path)["item"].to_list() == ["a", "b"]


def test_format_detection_and_override(tmp_path):
    assert detect_format("x/Beauty.txt.gz") == "sequence"
    assert detect_format("ml-100k.inter") == "recbole"
    path = write(tmp_path / "data.dat", "user,item,timestamp\nu,a,1\n")
    with pytest.raises(DataFormatError, match=r"data\.dat.*suffix '\.dat'"):
        read_interactions(path)
    assert read_interactions(path, fmt="csv")["item"].to_list() == ["a"]
    with pytest.raises(ValueError, match="fmt must be one of"):
        read_interactions(path, fmt="json")


def test_missing_column_lists_columns_found(tmp_path):
    path = write(tmp_path / "a.csv", "user_id,item_id,timestamp\nu,a,1\n")
    with pytest.raises(DataFormatError, match=r"a\.csv.*'user'.*\['user_id', 'item_id'"):
        read_interactions(path)


def test_missing_timestamp_column_suggests_time_col_none(tmp_path):
    path = write(tmp_path / "a.csv", "user,item\nu,a\n")
    with pytest.raises(DataFormatError, match="time_col=None"):
        read_interactions(path)


@pytest.mark.parametrize(
    ("rows", "line", "value"),
    [
        ("u,a,1\nu,b,oops\n", 3, "oops"),  # numbers first: a stray word is named
        ("u,a,2020-01-01\nu,b,2020-13-45\n", 3, "2020-13-45"),
        ("u,a,1\n\nu,b,\n", 4, None),  # blank line 3 still counts; empty value
        ("u,a,nan\n", 2, "nan"),
    ],
)
def test_unparsable_timestamp_names_file_line_value(tmp_path, rows, line, value):
    path = write(tmp_path / "bad.csv", "user,item,timestamp\n" + rows)
    with pytest.raises(DataFormatError) as info:
        read_interactions(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}, line {line}: ")
    assert (repr(value) if value else "empty timestamp") in str(info.value)


def test_empty_files(tmp_path):
    with pytest.raises(DataFormatError, match=r"empty\.csv: file is empty"):
        read_interactions(write(tmp_path / "empty.csv", ""))
    with pytest.raises(DataFormatError, match=r"blank\.txt: file is empty"):
        read_interactions(write(tmp_path / "blank.txt", "\n\n"))
    with pytest.raises(DataFormatError, match=r"header\.csv: no interactions"):
        read_interactions(write(tmp_path / "header.csv", "user,item,timestamp\n"))


def test_sequence_line_without_items(tmp_path):
    path = write(tmp_path / "s.txt", "u1 a b\nu2\n")
    with pytest.raises(DataFormatError, match=r"s\.txt, line 2: user has no items: 'u2'"):
        read_interactions(path)


def test_empty_id_and_ragged_row(tmp_path):
    path = write(tmp_path / "a.csv", "user,item,timestamp\nu,a,1\n,b,2\n")
    with pytest.raises(DataFormatError, match=r"a\.csv, line 3: empty user id"):
        read_interactions(path)
    path = write(tmp_path / "b.csv", "user,item,timestamp\nu,a,1\nu,b,2,9\n")
    with pytest.raises(DataFormatError, match=r"b\.csv, line 3: cannot parse as csv"):
        read_interactions(path)


def test_bad_rating_and_bad_parquet(tmp_path):
    path = write(tmp_path / "a.csv", "user,item,timestamp,rating\nu,a,1,five\n")
    with pytest.raises(DataFormatError, match=r"line 2: unparsable rating: 'five'"):
        read_interactions(path)
    path = write(tmp_path / "a.parquet", "not parquet")
    with pytest.raises(DataFormatError, match=r"a\.parquet: not a readable parquet file"):
        read_interactions(path)


def test_day_month_dates_are_refused_not_guessed(tmp_path):
    """'01/02/2020' could be 1 February or 2 January; only ISO-8601 is read."""
    path = write(tmp_path / "slash.csv", "user,item,timestamp\nu1,a,01/02/2020\nu1,b,03/01/2020\n")
    with pytest.raises(DataFormatError, match=r"line 2: unparsable timestamp \(not ISO-8601\)"):
        read_interactions(path)


@pytest.mark.parametrize(
    ("options", "named"),
    [({"user_col": "uid"}, "user_col"), ({"time_col": "ts"}, "time_col")],
)
def test_column_names_on_a_sequence_file_are_refused_not_ignored(tmp_path, options, named):
    path = write(tmp_path / "s.txt", "u1 a b c\n")
    with pytest.raises(ValueError, match=f"{named} name columns, but a sequence file has none"):
        read_interactions(path, **options)


def test_a_column_named_twice_is_refused(tmp_path):
    path = write(tmp_path / "dup.csv", "user,item,item,timestamp\nu1,a,b,1\n")
    with pytest.raises(DataFormatError, match=r"line 1: column 'item' appears twice"):
        read_interactions(path)


def test_an_unclosed_quote_is_reported_where_the_record_starts(tmp_path):
    path = write(tmp_path / "q.csv", 'user,item,timestamp\nu1,a,1\nu2,"b,2\nu3,c,3\n')
    with pytest.raises(DataFormatError, match=r"q\.csv, line 3: cannot parse as csv"):
        read_interactions(path)


def test_large_tables_keep_file_order_across_streaming_batches(tmp_path):
    """The streaming scan works in batches; rows must still come out in file order."""
    rng = np.random.default_rng(0)
    n = 300_000
    users = [f"u{u}" for u in rng.integers(0, 5000, size=n)]
    items = [f"{i:03d}" for i in rng.integers(0, 900, size=n)]
    times = rng.integers(0, 2_000_000_000, size=n).tolist()
    csv_path = tmp_path / "big.csv.gz"
    rows = zip(users, items, times, strict=True)
    lines = ["user,item,timestamp"] + [f"{u},{i},{t}" for u, i, t in rows]
    csv_path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1))
    parquet_path = tmp_path / "big.parquet"
    pl.DataFrame({"user": users, "item": items, "timestamp": times}).write_parquet(
        parquet_path, row_group_size=7_000
    )

    for path in (csv_path, parquet_path):
        df = read_interactions(path)
        assert df["user"].to_list() == users
        assert df["item"].to_list() == items
        assert df["timestamp"].to_list() == times


def test_iso_fast_path_agrees_with_fromisoformat():
    values = [
        "2020-02-29", "2021-02-29", "2020-13-01", "1970-01-01", "2099-12-31", "1969-12-31",
        "2020-01-01T23:59:59", "2020-01-01 00:00:00", "2020-01-01T24:00:00",
        "2020-01-01T23:59:60", "2020-01-01T10:00:00Z", "2020-01-01T10:00:00+00:00",
        "2020-01-01T10:00:00+02:00", "2020-01-01T10:00:00.250", "2020-01-01T10:00",
        "20200101", "2020-W01-1", "2020-1-1", " 2020-01-01", "2020-01-01x", "", "1e9",
    ]  # fmt: skip

    def reference(value: str) -> int | None:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)

    assert iso_to_micros(pl.Series(values)).to_list() == [reference(v) for v in values]


def test_gzip_tables_leave_no_temporary_copy(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = write(tmp_path / "log.csv.gz", "user,item,timestamp\nu,a,1\nu,b,x,9\n", gz=True)
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        assert read_interactions(path, skip_bad_lines=True).height == 1
    with pytest.raises(DataFormatError):
        read_interactions(path)
    assert list(scratch.iterdir()) == []
