"""Histories: the stable time sort and the id order equal a plain-Python reading of rules 2-5."""

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mrif.data.dataset import PreparedDataset
from mrif.data.histories import stable_time_order
from mrif.data.prepare import prepare_dataset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def reference(rows: list[tuple[str, str, float | None]], k_core: int | None, dedupe: bool):
    """Raw users, raw items and each user's raw history, the slow and obvious way.

    Users are numbered by their first row in the file (after a k-core, among the rows it
    keeps); each history is sorted by timestamp, ties in file order; items are numbered by
    first appearance in the sorted histories.
    """
    entries = list(enumerate(rows))  # (file row, (user, item, time))

    def by_user_then_time(entries):
        first = {}
        for row, (user, _, _) in sorted(entries):
            first.setdefault(user, row)
        return sorted(entries, key=lambda e: (first[e[1][0]], e[1][2] or 0, e[0]))

    entries = by_user_then_time(entries)
    if dedupe:
        seen = set()
        kept = []
        for entry in entries:
            pair = entry[1][:2]
            if pair not in seen:
                seen.add(pair)
                kept.append(entry)
        entries = kept
    if k_core is not None:
        while True:
            users = Counter(e[1][0] for e in entries)
            items = Counter(e[1][1] for e in entries)
            kept = [e for e in entries if users[e[1][0]] >= k_core and items[e[1][1]] >= k_core]
            if len(kept) == len(entries):
                break
            entries = kept
        entries = by_user_then_time(entries)
    raw_users = list(dict.fromkeys(e[1][0] for e in entries))
    raw_items = list(dict.fromkeys(e[1][1] for e in entries))
    histories = {user: [e[1][1] for e in entries if e[1][0] == user] for user in raw_users}
    return raw_users, raw_items, [histories[user] for user in raw_users]


def random_log(seed: int, times: str) -> list[tuple[str, str, float | None]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(int(rng.integers(20, 400))):
        user = f"u{rng.integers(0, 25)}"
        item = rng.choice(["7", "007", "70"]) + str(rng.integers(0, 12))  # "7" != "007"
        time = {
            "ties": float(rng.integers(0, 4)),
            "spread": float(rng.integers(0, 10**9)),
            "fractional": float(rng.integers(0, 8)) / 2,
            "none": None,
        }[times]
        rows.append((user, item, time))
    return rows


def write_log(path: Path, rows) -> Path:
    with_times = rows[0][2] is not None
    lines = ["user,item,timestamp" if with_times else "user,item"]
    for user, item, time in rows:
        stamp = ("" if time is None else f",{time:g}") if with_times else ""
        lines.append(f"{user},{item}{stamp}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("times", ["ties", "spread", "fractional", "none"])
@pytest.mark.parametrize(("k_core", "dedupe"), [(None, False), (None, True), (3, False), (2, True)])
def test_histories_match_the_slow_reference(tmp_path, seed, times, k_core, dedupe):
    rows = random_log(seed, times)
    source = write_log(tmp_path / "log.csv", rows)
    columns = None if times != "none" else {"timestamp": None}
    try:
        out = prepare_dataset(
            source, tmp_path / "ds", k_core=k_core, dedupe=dedupe, columns=columns,
            n_eval_negatives=3,
        )  # fmt: skip
    except ValueError as err:
        assert "removed every interaction" in str(err)
        assert reference(rows, k_core, dedupe)[0] == []
        return
    ds = PreparedDataset.load(out)

    raw_users, raw_items, histories = reference(rows, k_core, dedupe)
    assert ds.raw_users == raw_users
    assert ds.raw_items[1:] == raw_items
    assert [[ds.raw_items[i] for i in ds.history(u)] for u in range(ds.n_users)] == histories


def test_stable_time_order_matches_sorted():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, size=5000)
    for times in (rng.integers(0, 20, size=5000), rng.integers(0, 40, size=5000) / 4, None):
        expected = sorted(
            range(users.size), key=lambda r: (users[r], 0 if times is None else times[r], r)
        )
        assert stable_time_order(users, times).tolist() == expected


def test_timestamps_at_the_ends_of_the_range_sort_correctly():
    # 4102444799 (the last accepted second) needs all 32 low bits of the sort key.
    users = np.array([1, 1, 0, 0, 1])
    times = np.array([4_102_444_799, 0, 4_102_444_799, 1, 0])
    assert stable_time_order(users, times).tolist() == [3, 2, 1, 4, 0]


def test_histories_table_keeps_timestamps_aligned(tmp_path):
    source = write_log(tmp_path / "log.csv", [("a", "x", 3.0), ("b", "y", 1.0), ("a", "z", 1.0)])
    out = prepare_dataset(source, tmp_path / "ds", n_eval_negatives=1)
    histories = pl.read_parquet(out / "histories.parquet")
    assert histories["timestamps"].to_list() == [[1, 3], [1]]
    assert histories["items"].to_list() == [[1, 2], [3]]  # z, x; y
