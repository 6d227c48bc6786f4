"""The real 100-row Amazon Electronics sample (DIN layout) from the data mirror.

Layout, from its PROVENANCE.md: CSV with header ``user_id,item_id,time,cate_id``; ids are
0-based integers remapped from the 2014 Electronics 5-core; time is unix seconds at day
resolution; no ratings; rows are grouped by user but not sorted by time within a user.
Skipped without ``MRIF_DATA_MIRROR`` (the ``data_mirror`` fixture).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mrif.cli import main
from mrif.data.dataset import PreparedDataset
from mrif.data.readers import read_interactions, source_sha256

SAMPLE = "amazon-electronics-din-sample/amazon_electronics_sample.csv"
SAMPLE_SHA256 = "266b52fa56851657534acd707843c0ba58caddd57c0c86f15677bccf09f8250a"  # PROVENANCE
COLUMNS = ["--user-col", "user_id", "--item-col", "item_id", "--time-col", "time"]


@pytest.fixture
def sample(data_mirror: Path) -> Path:
    path = data_mirror / SAMPLE
    if not path.is_file():
        pytest.fail(f"{path}: the mirror lacks the Electronics sample")
    return path


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_sample_reads_with_string_ids_and_unix_seconds(sample):
    rows = csv_rows(sample)
    df = read_interactions(sample, user_col="user_id", item_col="item_id", time_col="time")

    assert source_sha256(sample) == SAMPLE_SHA256
    assert df.columns == ["user", "item", "timestamp", "order"]  # no rating column
    assert df["user"].to_list() == [row["user_id"] for row in rows]
    assert df["item"].to_list() == [row["item_id"] for row in rows]
    assert df["timestamp"].to_list() == [int(row["time"]) for row in rows]
    # The counts PROVENANCE.md verified.
    assert (df["user"].n_unique(), df["item"].n_unique(), df.height) == (17, 99, 100)
    assert (df["timestamp"].min(), df["timestamp"].max()) == (1352678400, 1402876800)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sample_prepares_end_to_end_with_the_cli(sample, tmp_path, capsys):
    out = tmp_path / "electronics-sample"
    assert main(["data", "prepare", str(sample), "--out", str(out), *COLUMNS]) == 0
    assert "17 users, 99 items, 100 interactions" in capsys.readouterr().out

    ds = PreparedDataset.load(out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"]["sha256"] == SAMPLE_SHA256 and meta["source"]["n_rows"] == 100
    # Each history is the user's rows stably sorted by time (file order breaks ties).
    rows = csv_rows(sample)
    for user, raw_user in enumerate(ds.raw_users):
        own = [row for row in rows if row["user_id"] == raw_user]
        expected = [row["item_id"] for row in sorted(own, key=lambda row: int(row["time"]))]
        assert [ds.raw_items[item] for item in ds.history(user)] == expected
    assert ds.raw_users == list(dict.fromkeys(row["user_id"] for row in rows))

    assert main(["data", "stats", str(out)]) == 0
    assert "format csv" in capsys.readouterr().out
