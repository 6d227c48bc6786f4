"""The ``mrif data`` commands: prepare (new formats, --skip-bad-lines, recipes) and stats."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mrif.cli import main
from mrif.data import registry
from mrif.data.prepare import prepare_dataset
from mrif.data.stats import dataset_stats, format_stats

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def run_cli(*args: object) -> int:
    return main([str(a) for a in args])


def linear_quantile(values: list[int], q: float) -> float:
    """Slow reference: linear interpolation between the order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("MRIF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MRIF_DATA_MIRROR", str(tmp_path / "mirror"))

    def no_network(url, timeout=60.0):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(registry, "fetch_url", no_network)


def udata_file(tmp_path: Path, lengths: list[int], bad: int = 0, n_items: int = 40) -> Path:
    """u.data with user u having ``lengths[u]`` ratings, plus ``bad`` malformed lines."""
    lines = [
        f"{user}\t{(user * 7 + step) % n_items}\t3\t{881250949 + user * 1000 + step}"
        for user, length in enumerate(lengths)
        for step in range(length)
    ]
    lines[1:1] = ["not a rating line"] * bad
    path = tmp_path / "u.data"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prepare_detects_a_published_format(tmp_path, capsys):
    source = udata_file(tmp_path, [4, 3, 5])
    assert run_cli("data", "prepare", source, "--out", tmp_path / "ds", "--negatives", "2") == 0
    assert "3 users, 12 items, 12 interactions, 3 evaluated users" in capsys.readouterr().out
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["source"]["format"] == "movielens-udata"


def test_prepare_skip_bad_lines_prints_and_records_the_count(tmp_path, capsys):
    source = udata_file(tmp_path, [4, 3, 5], bad=3)
    assert run_cli("data", "prepare", source, "--out", tmp_path / "strict") == 2
    err = capsys.readouterr().err
    assert f"{source}, line 2: expected 4 fields separated by '\\t'" in err
    assert not (tmp_path / "strict").exists()

    out = tmp_path / "lenient"
    assert run_cli("data", "prepare", source, "--out", out, "--skip-bad-lines") == 0
    assert "12 interactions, 3 evaluated users; 3 bad lines skipped" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"]["n_bad_lines_skipped"] == 3
    assert meta["recipe"]["skip_bad_lines"] is True


def test_prepare_skip_bad_lines_on_a_table(tmp_path, capsys):
    source = tmp_path / "log.csv"
    rows = [f"u{n % 3},i{n},{100 + n}" for n in range(12)]
    rows[4] = "u1,i4,not-a-time"
    rows[7] = "u2,i7,100,surplus"
    source.write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    assert run_cli("data", "prepare", source, "--out", tmp_path / "strict") == 2
    # A line the parser cannot split stops the read before any value is checked.
    assert f"{source}, line 9: cannot parse as csv" in capsys.readouterr().err

    out = tmp_path / "ds"
    assert run_cli("data", "prepare", source, "--out", out, "--skip-bad-lines") == 0
    # u1 loses two rows (lines 6 and 9) and is left with two: train-only.
    assert "10 interactions, 2 evaluated users; 2 bad lines skipped" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"]["n_bad_lines_skipped"] == 2 and meta["source"]["n_rows"] == 10
    assert [e.split(":")[0] for e in meta["source"]["bad_line_examples"]] == ["line 6", "line 9"]


def test_prepare_a_registered_name_applies_its_recipe(tmp_path, offline, capsys):
    entry = registry.REGISTRY["amazon-electronics"]
    mirror_file = tmp_path / "mirror" / f"{entry.mirror_path}.gz"
    mirror_file.parent.mkdir(parents=True)
    users, items = [f"A{u}" for u in range(11)], [f"B{i:03d}" for i in range(10)]
    lines = [
        json.dumps({"reviewerID": u, "asin": i, "overall": 5.0, "unixReviewTime": 1e9 + n})
        for n, (u, i) in enumerate((u, i) for u in users for i in items)
    ]
    lines += [
        json.dumps({"reviewerID": "short", "asin": "B000", "overall": 1.0, "unixReviewTime": 1e9})
    ]
    mirror_file.write_bytes(gzip.compress("\n".join(lines).encode()))

    out = tmp_path / "electronics"
    assert run_cli("data", "prepare", "amazon-electronics", "--out", out, "--negatives", "3") == 0
    assert "11 users, 10 items, 110 interactions" in capsys.readouterr().out  # "short" is gone
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["name"], meta["recipe"]["k_core"]) == ("amazon-electronics", 10)

    args = ["data", "prepare", "amazon-electronics", "--out", tmp_path / "other"]
    assert run_cli(*args, "--k-core", "5", "--dedupe") == 2
    err = capsys.readouterr().err
    assert "--k-core, --dedupe would change the recipe of amazon-electronics" in err
    assert not (tmp_path / "other").exists()


def test_stats_match_a_slow_count(tmp_path):
    lengths = [3, 9, 4, 4, 12, 5, 7, 30, 3, 6, 8]
    out = prepare_dataset(udata_file(tmp_path, lengths), tmp_path / "ds", n_eval_negatives=2)
    stats = dataset_stats(out)

    assert (stats["n_users"], stats["n_actions"]) == (len(lengths), sum(lengths))
    assert stats["n_items"] == len(
        {(u * 7 + s) % 40 for u, n in enumerate(lengths) for s in range(n)}
    )
    expected = {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths)}
    for label, q in {"25%": 0.25, "50%": 0.5, "75%": 0.75, "90%": 0.9, "99%": 0.99}.items():
        expected[label] = linear_quantile(lengths, q)
    assert stats["sequence_length"] == pytest.approx(expected)
    assert stats["published"] is None
    assert stats["filtering"]["k_core"] is None and stats["source"]["format"] == "movielens-udata"


def test_stats_command_prints_counts_filtering_and_the_paper(tmp_path, capsys):
    lengths = [12] * 4 + [15] * 3
    # 15 distinct items per user at most, each seen by at least 3 users: the 3-core keeps all.
    source = udata_file(tmp_path, lengths, n_items=15)
    out = prepare_dataset(source, tmp_path / "ds", k_core=3, dedupe=True, name="amazon-electronics")

    assert run_cli("data", "stats", out) == 0
    text = capsys.readouterr().out
    assert "3-core (iterated to a fixed point)" in text
    assert "repeated (user, item) events dropped" in text
    assert str(source.resolve()) in text and "format movielens-udata" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    n_actions = sum(lengths)
    assert rows["users"][:2] == [str(len(lengths)), "11,589"]
    assert rows["items"][:2] == ["15", "20,247"]
    assert rows["actions"][:2] == [f"{n_actions:,}", "347,393"]
    assert "MRIF paper (Li et al., SIGIR 2020), Table 1" in text
    assert "min 12" in text and "max 15" in text

    assert run_cli("data", "stats", out, "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["published"]["n_items"] == 20_247
    assert printed["n_actions"] == n_actions


def test_stats_without_paper_figures_prints_one_column(tmp_path):
    out = prepare_dataset(udata_file(tmp_path, [3, 4]), tmp_path / "ds", n_eval_negatives=1)
    text = format_stats(dataset_stats(out))
    assert "published" not in text
    assert "no k-core, repeats kept" in text


def test_stats_on_a_directory_that_is_not_a_dataset(tmp_path, capsys):
    assert run_cli("data", "stats", tmp_path) == 2
    assert f"{tmp_path / 'meta.json'}: missing" in capsys.readouterr().err
