"""The MRIF paper's Amazon recipes: 2014 review files, iterated 10-core, unpinned checksums
recorded on first use; and preparation of the new formats never leaves a half-written dataset.

No test touches the network: the downloader is replaced in every test.
"""

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from mrif.data import registry
from mrif.data.checks import DataFormatError
from mrif.data.dataset import PreparedDataset
from mrif.data.prepare import prepare_dataset
from mrif.data.registry import (
    REGISTRY,
    ChecksumMismatchError,
    prepare_registered,
    recorded_checksum_path,
    resolve_source,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*whole unseen pool is used:UserWarning")
TOFU_WARNING = "has no pinned sha256; trusting the first copy found"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Private cache, a private mirror, and a downloader that must not run."""
    monkeypatch.setenv("MRIF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MRIF_DATA_MIRROR", str(tmp_path / "mirror"))

    def no_network(url, timeout=60.0):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(registry, "fetch_url", no_network)


def review(user: str, item: str, ts: int) -> str:
    """One line of reviews_<Category>_5.json (2014), with the keys the dump carries."""
    record = {
        "reviewerID": user,
        "asin": item,
        "reviewerName": f"name of {user}",
        "helpful": [0, 0],
        "reviewText": "Does what it says.",
        "overall": 4.0,
        "summary": "ok",
        "unixReviewTime": ts,
        "reviewTime": "01 1, 2014",
    }
    return json.dumps(record)


def chain_pairs() -> list[tuple[str, str]]:
    """A 12 x 12 block that is a 10-core, plus users and an item that fall out one by one.

    ``x9`` has 9 reviews and goes in round 1; that leaves item ``X`` with 9 and it goes in
    round 2; that leaves ``c`` and ``x1..x8`` with 9 each and they go in round 3.
    """
    core_users = [f"U{u:02d}" for u in range(12)]
    core_items = [f"I{i:02d}" for i in range(12)]
    pairs = [(u, i) for u in core_users for i in core_items]
    pairs += [("c", i) for i in core_items[:9]] + [("c", "X")]
    for n in range(1, 10):
        n_core = 9 if n < 9 else 8  # x9 is one review short
        pairs += [(f"x{n}", "X")] + [(f"x{n}", i) for i in core_items[:n_core]]
    return pairs


def one_pass(pairs: list[tuple[str, str]], k: int, sides: tuple[int, int]) -> list:
    """One filter pass per side (0 = users, 1 = items), in the given order."""
    for side in sides:
        counts = Counter(pair[side] for pair in pairs)
        pairs = [pair for pair in pairs if counts[pair[side]] >= k]
    return pairs


def below(pairs: list[tuple[str, str]], k: int) -> list[str]:
    users, items = Counter(u for u, _ in pairs), Counter(i for _, i in pairs)
    return [u for u, n in users.items() if n < k] + [i for i, n in items.items() if n < k]


def put_mirror_file(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / "mirror" / f"{REGISTRY[name].mirror_path}.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def test_paper_recipes_are_registered():
    electronics, movies = REGISTRY["amazon-electronics"], REGISTRY["amazon-movies"]
    base = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
    assert electronics.url == base + "reviews_Electronics_5.json.gz"
    assert movies.url == base + "reviews_Movies_and_TV_5.json.gz"
    for entry in (electronics, movies):
        assert (entry.fmt, entry.k_core, entry.dedupe, entry.sha256) == (
            "amazon-reviews",
            10,
            False,
            None,
        )
    published = electronics.published, movies.published
    assert [(p.n_users, p.n_items, p.n_actions) for p in published if p] == [
        (11_589, 20_247, 347_393),
        (33_326, 21_901, 958_986),
    ]


def test_amazon_electronics_recipe_reaches_a_true_10_core(tmp_path):
    pairs = chain_pairs()
    # The fixed point is needed: one pass, in either order, leaves someone below 10.
    assert below(one_pass(pairs, 10, (0, 1)), 10)
    assert below(one_pass(pairs, 10, (1, 0)), 10)
    lines = [review(u, i, 1_300_000_000 + n * 3600) for n, (u, i) in enumerate(pairs)]
    put_mirror_file(tmp_path, "amazon-electronics", lines)

    with pytest.warns(UserWarning, match=TOFU_WARNING):
        out = prepare_registered("amazon-electronics", tmp_path / "prepared")
    ds = PreparedDataset.load(out)

    histories = pl.read_parquet(out / "histories.parquet")
    kept = [
        (ds.raw_users[user], ds.raw_items[item])
        for user, items in zip(histories["user_id"], histories["items"], strict=True)
        for item in items
    ]
    assert not below(kept, 10)  # every user and every item has at least 10 interactions
    assert sorted(kept) == sorted((u, i) for u, i in pairs if u.startswith("U"))
    assert (ds.n_users, ds.n_items, ds.item_values.size) == (12, 12, 144)
    assert ds.meta["name"] == "amazon-electronics"
    assert ds.meta["source"]["format"] == "amazon-reviews"
    assert ds.meta["source"]["n_rows"] == len(pairs)
    assert ds.meta["recipe"]["k_core"] == 10 and ds.meta["recipe"]["dedupe"] is False


def test_unpinned_checksum_is_recorded_on_first_use_then_enforced(tmp_path):
    lines = [
        review(f"U{u}", f"I{i}", 1_300_000_000 + u * 100 + i) for u in range(3) for i in range(4)
    ]
    path = put_mirror_file(tmp_path, "amazon-movies", lines)
    record = recorded_checksum_path("amazon-movies")
    assert not record.exists()

    with pytest.warns(UserWarning, match=TOFU_WARNING):
        assert resolve_source("amazon-movies") == path
    recorded = json.loads(record.read_text())
    assert recorded["sha256"] == hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    assert recorded["first"] == str(path)

    assert resolve_source("amazon-movies") == path  # the same copy passes, silently
    put_mirror_file(tmp_path, "amazon-movies", lines[:-1])
    with pytest.raises(ChecksumMismatchError) as info:
        resolve_source("amazon-movies")
    message = str(info.value)
    assert f"expected {recorded['sha256']}, got" in message
    assert f"recorded on first use in {record}" in message

    record.unlink()  # deleting the record accepts the new copy
    with pytest.warns(UserWarning, match=TOFU_WARNING):
        assert resolve_source("amazon-movies") == path


def test_unpinned_download_is_checked_on_content_and_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("MRIF_DATA_MIRROR")
    content = (review("U1", "I1", 1_300_000_000) + "\n").encode()
    monkeypatch.setattr(registry, "fetch_url", lambda url, timeout=60.0: gzip.compress(content))
    with pytest.warns(UserWarning, match=TOFU_WARNING):
        path = resolve_source("amazon-electronics")
    assert path == tmp_path / "cache" / "sources" / REGISTRY["amazon-electronics"].mirror_path
    recorded = json.loads(recorded_checksum_path("amazon-electronics").read_text())
    assert recorded["sha256"] == hashlib.sha256(content).hexdigest()  # not of gz


def test_a_bad_line_in_a_recipe_file_stops_before_anything_is_written(tmp_path):
    lines = [review("U1", f"I{i}", 1_300_000_000 + i) for i in range(3)]
    lines[1] = lines[1].replace('"unixReviewTime": 1300000001', '"unixReviewTime": -1')
    put_mirror_file(tmp_path, "amazon-electronics", lines)
    out = tmp_path / "prepared" / "electronics"
    with pytest.warns(UserWarning, match=TOFU_WARNING):
        with pytest.raises(DataFormatError, match=r"line 2: timestamp out of range"):
            prepare_registered("amazon-electronics", out)
    assert not (tmp_path / "prepared").exists()  # nothing, not even the parent directory


def reviews_file(tmp_path: Path, bad_lines: int = 0) -> Path:
    lines = [
        review(f"U{u}", f"I{(u + i) % 7}", 1_300_000_000 + i) for u in range(6) for i in range(5)
    ]
    lines[3:3] = ["{not json"] * bad_lines
    path = tmp_path / "reviews_Test_5.json.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


@pytest.mark.parametrize("interrupt", [OSError("disk full (simulated)"), KeyboardInterrupt()])
def test_interrupted_preparation_leaves_no_dataset(tmp_path, monkeypatch, interrupt):
    source = reviews_file(tmp_path)
    parent = tmp_path / "datasets"
    parent.mkdir()
    real_write = pl.DataFrame.write_parquet
    calls = []

    def failing_write(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 4:
            raise interrupt
        return real_write(self, path, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing_write)
    with pytest.raises(type(interrupt)):
        prepare_dataset(source, parent / "out", skip_bad_lines=True)
    assert list(parent.iterdir()) == []  # neither the dataset nor its temp directory


def test_failed_overwrite_keeps_the_complete_dataset(tmp_path):
    source = reviews_file(tmp_path)
    out = prepare_dataset(source, tmp_path / "out", n_eval_negatives=3)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    (tmp_path / "broken").mkdir()
    broken = reviews_file(tmp_path / "broken", bad_lines=2)
    with pytest.raises(DataFormatError, match=r"line 4: neither a JSON object"):
        prepare_dataset(broken, out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_skipped_lines_are_counted_in_meta(tmp_path):
    source = reviews_file(tmp_path, bad_lines=2)
    with pytest.raises(DataFormatError, match=r"reviews_Test_5\.json\.gz, line 4: "):
        prepare_dataset(source, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()

    with pytest.warns(UserWarning, match="skipped 2 bad line"):
        out = prepare_dataset(source, tmp_path / "lenient", skip_bad_lines=True, n_eval_negatives=3)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"]["n_bad_lines_skipped"] == 2
    assert [e.split(":")[0] for e in meta["source"]["bad_line_examples"]] == ["line 4", "line 5"]
    assert meta["recipe"]["skip_bad_lines"] is True
    assert meta["source"]["n_rows"] == 30 and meta["n_interactions"] == 30
    assert meta["source"]["format"] == "amazon-reviews"


def test_a_truncated_download_is_neither_cached_nor_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("MRIF_DATA_MIRROR")
    packed = gzip.compress(
        "".join(review(f"U{n}", "I1", 1_300_000_000) + "\n" for n in range(999)).encode()
    )
    monkeypatch.setattr(registry, "fetch_url", lambda url, timeout=60.0: packed[:-100])
    entry = REGISTRY["amazon-electronics"]
    with pytest.raises(DataFormatError, match=f"{entry.url}: corrupt or truncated gzip data"):
        resolve_source("amazon-electronics")
    assert not (tmp_path / "cache" / "sources" / entry.mirror_path).exists()
    assert not recorded_checksum_path("amazon-electronics").exists()
