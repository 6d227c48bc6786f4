"""Published raw layouts: Amazon 2014 ratings CSV, 2014/2018 review JSON, 2023 JSON, MovieLens.

Each file below is written in the exact published layout (field order, key names, value
types, extra keys); expected values are read off the lines by hand.
"""

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from mrif.data.readers import DataFormatError, detect_format, read_interactions

COLUMNS = ["user", "item", "timestamp", "rating", "order"]
SCHEMA = {
    "user": pl.String,
    "item": pl.String,
    "timestamp": pl.Int64,
    "rating": pl.Float64,
    "order": pl.Int64,
}

# Amazon 2014 reviews: strict JSON lines, as in reviews_<Category>_5.json.
REVIEW_2014 = {
    "reviewerID": "A2SUAM1J3GNN3B",
    "asin": "0000013714",
    "reviewerName": "J. McDonald",
    "helpful": [2, 3],
    "reviewText": "Bought it for the choir; the binding held up.",
    "overall": 5.0,
    "summary": "Sturdy",
    "unixReviewTime": 1252800000,
    "reviewTime": "09 13, 2009",
}
# Amazon 2018 reviews: different key order, booleans, optional style/vote/image keys.
REVIEW_2018 = {
    "overall": 4.0,
    "verified": True,
    "reviewTime": "10 17, 2015",
    "reviewerID": "A1HP7NVNPFMA4N",
    "asin": "0700026657",
    "style": {"Format:": " Hardcover"},
    "reviewerName": "Ambrosia075",
    "reviewText": "Works as described.",
    "summary": "Fine",
    "unixReviewTime": 1445040000,
    "vote": "2",
    "image": ["https://example.invalid/1.jpg"],
}
# Amazon 2023: user_id / parent_asin / rating / timestamp in milliseconds.
REVIEW_2023 = {
    "rating": 5.0,
    "title": "Good cable",
    "text": "Charges my phone.",
    "images": [],
    "asin": "B01G8JO5F2",
    "parent_asin": "B01G8JO5F3",
    "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ",
    "timestamp": 1588687728923,
    "helpful_vote": 0,
    "verified_purchase": True,
}


def write(path: Path, text: str, *, gz: bool = False, bom: bool = False) -> Path:
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def json_lines(*records: dict) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def test_amazon_2014_ratings_csv(tmp_path):
    path = write(
        tmp_path / "ratings_Electronics.csv",
        "A1YJEY40YUW4SE,7806397051,1.0,1395651600\n"
        "A3NHUQ33CFH3VM,0000031887,5.0,1389657600\n"
        "A1YJEY40YUW4SE,B00000J1EQ,3.0,1092787200\n",
    )
    df = read_interactions(path, fmt="amazon-ratings")

    assert df.columns == COLUMNS and dict(df.schema) == SCHEMA
    assert df["user"].to_list() == ["A1YJEY40YUW4SE", "A3NHUQ33CFH3VM", "A1YJEY40YUW4SE"]
    assert df["item"].to_list() == ["7806397051", "0000031887", "B00000J1EQ"]  # zeros kept
    assert df["rating"].to_list() == [1.0, 5.0, 3.0]
    assert df["timestamp"].to_list() == [1395651600, 1389657600, 1092787200]
    assert df["order"].to_list() == [0, 1, 2]


def test_amazon_2014_reviews_json(tmp_path):
    second = {**REVIEW_2014, "reviewerID": "A14VAT5EAX3D9S", "asin": "0005019281"}
    second |= {"overall": 2.0, "unixReviewTime": 1203984000}
    path = write(tmp_path / "reviews_Electronics_5.json", json_lines(REVIEW_2014, second))
    df = read_interactions(path, fmt="amazon-reviews")

    assert df.columns == COLUMNS and dict(df.schema) == SCHEMA
    assert df.rows() == [
        ("A2SUAM1J3GNN3B", "0000013714", 1252800000, 5.0, 0),
        ("A14VAT5EAX3D9S", "0005019281", 1203984000, 2.0, 1),
    ]


def test_amazon_2014_python_literal_lines_mixed_with_json(tmp_path):
    """Some 2014 files hold one Python dict literal per line: single quotes, True/False."""
    literal = (
        "{'reviewerID': 'A3AF8FFZAZYNE5', 'asin': '0000000078', 'helpful': [1, 1], "
        "'reviewText': \"It's the one I wanted\", 'overall': 4.0, 'verified': True, "
        "'unixReviewTime': 1092182400, 'reviewTime': '08 11, 2004'}\n"
    )
    path = write(tmp_path / "reviews_Books.json", literal + json_lines(REVIEW_2014) + literal)
    df = read_interactions(path, fmt="amazon-reviews")

    assert df["user"].to_list() == ["A3AF8FFZAZYNE5", "A2SUAM1J3GNN3B", "A3AF8FFZAZYNE5"]
    assert df["item"].to_list() == ["0000000078", "0000013714", "0000000078"]
    assert df["timestamp"].to_list() == [1092182400, 1252800000, 1092182400]
    assert df["rating"].to_list() == [4.0, 5.0, 4.0]


def test_python_literals_are_never_run_as_code(tmp_path):
    call = "{'reviewerID': __import__('os').getcwd(), 'asin': 'a', 'overall': 1.0, 'x': 1}\n"
    path = write(tmp_path / "reviews_X.json", call)
    with pytest.raises(DataFormatError, match="neither a JSON object nor a Python dict literal"):
        read_interactions(path, fmt="amazon-reviews")


def test_amazon_2018_reviews_json(tmp_path):
    path = write(tmp_path / "Electronics_5.json", json_lines(REVIEW_2018), gz=True)
    df = read_interactions(path, fmt="amazon-reviews")
    assert df.rows() == [("A1HP7NVNPFMA4N", "0700026657", 1445040000, 4.0, 0)]


def test_amazon_2023_milliseconds_become_whole_seconds(tmp_path):
    late = {**REVIEW_2023, "user_id": "AFQLNQNQYFWQZPJQZS6V3NZU4QBQ", "timestamp": 1588687729999}
    path = write(tmp_path / "Electronics.jsonl", json_lines(REVIEW_2023, late))
    df = read_interactions(path, fmt="amazon-2023")

    assert df.columns == COLUMNS and dict(df.schema) == SCHEMA
    assert df["user"].to_list() == ["AGKHLEW2SOWHNMFQIJGBECAF7INQ", "AFQLNQNQYFWQZPJQZS6V3NZU4QBQ"]
    assert df["item"].to_list() == ["B01G8JO5F3", "B01G8JO5F3"]  # parent_asin, not asin
    assert df["timestamp"].to_list() == [1588687728, 1588687729]  # floored, not rounded
    assert df["rating"].to_list() == [5.0, 5.0]


def test_movielens_ratings_dat(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    df = read_interactions(path, fmt="movielens-dat")
    assert df.rows() == [("1", "1193", 978300760, 5.0, 0), ("1", "661", 978302109, 3.0, 1)]


def test_movielens_10m_half_star_ratings(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::122::5::838985046\n2::151::3.5::868246450\n")
    df = read_interactions(path, fmt="movielens-dat")
    assert df["rating"].to_list() == [5.0, 3.5]


def test_movielens_u_data(tmp_path):
    path = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    df = read_interactions(path, fmt="movielens-udata")
    assert df.rows() == [("196", "242", 881250949, 3.0, 0), ("186", "302", 891717742, 3.0, 1)]


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("ratings_Electronics.csv", "A1,B1,5.0,1395651600\n", "amazon-ratings"),
        ("reviews_Electronics_5.json", json_lines(REVIEW_2014), "amazon-reviews"),
        ("Electronics_5.json", json_lines(REVIEW_2018), "amazon-reviews"),
        ("Electronics.jsonl", json_lines(REVIEW_2023), "amazon-2023"),
        ("mine.json", "\n" + json_lines(REVIEW_2023), "amazon-2023"),
        ("ratings.dat", "1::1193::5::978300760\n", "movielens-dat"),
        ("u.data", "196\t242\t3\t881250949\n", "movielens-udata"),
        ("u1.base", "196\t242\t3\t881250949\n", "movielens-udata"),
        ("ua.test", "196\t242\t3\t881250949\n", "movielens-udata"),
    ],
)
def test_format_detected_from_published_names_and_keys(tmp_path, name, text, fmt):
    plain = write(tmp_path / name, text)
    packed = write(tmp_path / f"{name}.gz", text, gz=True)
    assert detect_format(plain) == fmt
    assert detect_format(packed) == fmt
    assert read_interactions(packed).equals(read_interactions(plain, fmt=fmt))


def test_json_with_unknown_keys_is_not_guessed(tmp_path):
    path = write(tmp_path / "other.json", '\n{"uid": "u", "iid": "i", "ts": 1}\n')
    with pytest.raises(DataFormatError, match=r"other\.json, line 2: cannot tell the JSON layout"):
        detect_format(path)


@pytest.mark.parametrize(
    ("fmt", "line", "user"),
    [
        ("amazon-ratings", "A1,B1,5.0,1395651600\n", "A1"),
        ("movielens-dat", "1::1193::5::978300760\n", "1"),
        ("movielens-udata", "196\t242\t3\t881250949\n", "196"),
    ],
)
def test_byte_order_mark_and_gzip_are_accepted(tmp_path, fmt, line, user):
    plain = read_interactions(write(tmp_path / "plain", line), fmt=fmt)
    with_bom = read_interactions(write(tmp_path / "bom", line, bom=True), fmt=fmt)
    packed = read_interactions(write(tmp_path / "packed", line, gz=True, bom=True), fmt=fmt)
    assert with_bom["user"].to_list() == [user]  # no BOM glued to the first id
    assert with_bom.equals(plain) and packed.equals(plain)


def test_byte_order_mark_on_json_lines(tmp_path):
    path = write(tmp_path / "r.json", json_lines(REVIEW_2014), bom=True)
    assert read_interactions(path, fmt="amazon-reviews")["user"].to_list() == ["A2SUAM1J3GNN3B"]
    assert detect_format(path) == "amazon-reviews"


def test_windows_line_endings_and_blank_lines(tmp_path):
    path = write(tmp_path / "u.data", "196\t242\t3\t881250949\r\n\r\n186\t302\t3\t891717742\r\n")
    df = read_interactions(path)
    assert df.rows() == [("196", "242", 881250949, 3.0, 0), ("186", "302", 891717742, 3.0, 1)]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"user_col": "reviewerID"}, "user_col"),
        ({"time_col": "unixReviewTime"}, "time_col"),
        ({"time_col": None}, "time_col"),
        ({"rating_col": "overall"}, "rating_col"),
    ],
)
def test_fixed_layouts_refuse_column_names(tmp_path, options, named):
    path = write(tmp_path / "reviews_X.json", json_lines(REVIEW_2014))
    with pytest.raises(ValueError, match=f"{named} name columns, but the amazon-reviews layout"):
        read_interactions(path, **options)


def test_rating_col_none_drops_ratings_of_a_line_format(tmp_path):
    path = write(tmp_path / "u.data", "196\t242\t3\t881250949\n")
    assert read_interactions(path, rating_col=None).columns == [
        "user",
        "item",
        "timestamp",
        "order",
    ]


def test_many_rows_cross_the_chunk_boundary(tmp_path, monkeypatch):
    from mrif.data import lines

    monkeypatch.setattr(lines, "_CHUNK_ROWS", 3)
    rows = [
        f"{u}\t{i}\t{(u + i) % 5 + 1}\t{881250949 + u * 10 + i}" for u in range(3) for i in range(4)
    ]
    df = read_interactions(write(tmp_path / "u.data", "\n".join(rows) + "\n"))
    assert df.height == 12
    assert df["item"].to_list() == [str(i) for _ in range(3) for i in range(4)]
    assert df["timestamp"].to_list() == [881250949 + u * 10 + i for u in range(3) for i in range(4)]
