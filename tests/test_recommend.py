"""Top-k recommendations from a run directory, in raw ids (CASES B18), against brute force."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from mrif.batches import left_pad
from mrif.cli import main
from mrif.data.prepare import prepare_dataset
from mrif.recommend import (
    HISTORY_USER,
    Recommender,
    RecommendError,
    load_recommender,
    write_recommendations,
)
from mrif.run_dir import RunError

FAST = ["--dim", "8", "--max-len", "8", "--epochs", "2", "--quiet"]
B18_LOG = """user,item,rating,timestamp
u1,B00X,5,1
u2,A17,4,2
u2,C9,3,3
u3,B00X,5,4
u3,D1,4,5
u3,E2,4,6
u3,F3,4,7
u4,B00X,5,8
u4,E2,4,9
u4,D1,4,10
u4,F3,4,11
"""
"""CASES B18's three rows (items first seen in the order B00X, A17, C9), then two users with
enough history for a validation and a test target. Counted over the training sequences,
B00X is the most popular item (3 of 7), and the only one u2 has not seen among the first
three."""


def run_cli(*args: object) -> int:
    return main([str(a) for a in args])


def train(data: Path, model: str, out: Path) -> Path:
    assert run_cli("train", "--data", data, "--model", model, "--out", out, *FAST) == 0
    return out


@pytest.fixture(scope="module")
def b18_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("b18")
    (root / "log.csv").write_text(B18_LOG)
    data = prepare_dataset(root / "log.csv", root / "data", n_eval_negatives=2, seed=0)
    return train(data, "pop", root / "pop")


@pytest.fixture(scope="module")
def sasrec_run(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tiny_dataset_dir, "sasrec", tmp_path_factory.mktemp("rec") / "sasrec")


@pytest.fixture(scope="module")
def bpr_run(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tiny_dataset_dir, "bpr", tmp_path_factory.mktemp("rec") / "bpr")


def small_batches(recommender: Recommender) -> Recommender:
    """Three users and seven items per scoring call: every batch and chunk edge is crossed."""
    recommender.train = dataclasses.replace(recommender.train, eval_batch_size=6, item_chunk=7)
    return recommender


def brute_force_top(
    recommender: Recommender, raw_user: str, k: int, exclude_seen: bool
) -> tuple[list[str], np.ndarray]:
    """One user at a time, every item in one call, sorted by score then item id."""
    dataset, model = recommender.dataset, recommender.model
    user = dataset.raw_users.index(raw_user)
    history = dataset.history(user)
    seq = torch.from_numpy(left_pad([history], model.config.max_len))
    items = torch.arange(1, dataset.n_items + 1)
    with torch.no_grad():
        scores = model.candidate_scores(seq, items, torch.tensor([user]))[0].double().numpy()
    ids = np.arange(1, dataset.n_items + 1)
    if exclude_seen:
        keep = ~np.isin(ids, history)
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:k]
    return [dataset.raw_items[i] for i in ids[order]], scores[order]


def test_b18_recommend_speaks_raw_ids_in_a_fresh_process(b18_run: Path) -> None:
    """CASES B18: ``recommend --user u2 --k 1`` prints B00X, in this process and in a new one
    that only has the run directory."""
    assert load_recommender(b18_run).for_users(["u2"], k=1).items == [["B00X"]]
    command = [sys.executable, "-c", "import sys; from mrif.cli import main; sys.exit(main())"]
    result = subprocess.run(
        [*command, "recommend", str(b18_run), "--user", "u2", "--k", "1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.strip().splitlines()
    assert header.split("\t") == ["user", "rank", "item", "score"]
    assert row.split("\t")[:3] == ["u2", "1", "B00X"]


def test_b18_unknown_user_is_a_clear_error(b18_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "recs.csv"
    assert run_cli("recommend", b18_run, "--user", "u9", "--k", "1", "--out", out) == 2
    assert "user(s) 'u9' not in the run's dataset (4 users" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def copy_run(run: Path, to: Path) -> Path:
    to.mkdir()
    for path in run.iterdir():
        if path.is_file():
            (to / path.name).write_bytes(path.read_bytes())
    return to


def reverse_ids(path: Path, column: str) -> None:
    table = pl.read_parquet(path)
    table.with_columns(pl.col(column).reverse()).write_parquet(path)


def test_b18_a_dataset_with_other_item_ids_is_refused(b18_run: Path, tmp_path: Path) -> None:
    """A run whose saved item ids no longer match its dataset would recommend shifted ids."""
    copy = copy_run(b18_run, tmp_path / "run")
    reverse_ids(copy / "items.parquet", "raw_item")
    with pytest.raises(RunError, match="items.parquet and the dataset at .* disagree on the item"):
        load_recommender(copy)


def test_b18_per_user_models_refuse_other_user_ids(
    sasrec_run: Path, bpr_run: Path, tmp_path: Path
) -> None:
    """BPR reads a vector per user id: with the users renumbered it would answer for someone
    else. SASRec reads the dataset's histories and needs no user ids."""
    bpr = copy_run(bpr_run, tmp_path / "bpr")
    sasrec = copy_run(sasrec_run, tmp_path / "sasrec")
    assert (bpr / "users.parquet").exists()
    for run in (bpr, sasrec):
        reverse_ids(run / "users.parquet", "raw_user")
    with pytest.raises(RunError, match="users.parquet and the dataset .* disagree on the user"):
        load_recommender(bpr)
    assert load_recommender(sasrec).for_users(["u1"], k=2).items == (
        load_recommender(sasrec_run).for_users(["u1"], k=2).items
    )
    for run in (bpr, sasrec):  # a run saved before users.parquet existed
        (run / "users.parquet").unlink()
    with pytest.raises(RunError, match="cannot be checked for the user ids, which bpr learns"):
        load_recommender(bpr)
    assert load_recommender(sasrec).for_users(["u1"], k=2).items


def test_b18_a_dataset_with_other_counts_is_refused(b18_run: Path, tmp_path: Path, capsys) -> None:
    """Re-prepared with one more user, a per-user model's weights no longer fit: a clear error,
    for recommend and evaluate alike, instead of a tensor-size message."""
    copy = copy_run(b18_run, tmp_path / "run")
    record = json.loads((copy / "config.json").read_text())
    record["dataset"]["n_users"] = 5
    (copy / "config.json").write_text(json.dumps(record))
    for command in (["recommend", copy, "--user", "u2"], ["evaluate", copy]):
        assert run_cli(*command) == 2
        error = capsys.readouterr().err
        assert "has 4 users and 6 items, but run" in error
        assert "was trained on 5 and 6" in error


def test_unreadable_id_file_names_the_file(b18_run: Path, tmp_path: Path) -> None:
    copy = copy_run(b18_run, tmp_path / "run")
    (copy / "items.parquet").write_text("junk")
    with pytest.raises(RunError, match=r"items.parquet: not a readable item id table"):
        load_recommender(copy)


def test_a_missing_run_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="run directory .*nothere does not exist"):
        load_recommender(tmp_path / "nothere")


@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("run", ["sasrec_run", "bpr_run"])
def test_batched_recommendations_equal_brute_force(
    run: str, exclude_seen: bool, request: pytest.FixtureRequest
) -> None:
    recommender = small_batches(load_recommender(request.getfixturevalue(run)))
    users = recommender.dataset.raw_users
    got = recommender.for_users(None, k=5, exclude_seen=exclude_seen)
    assert got.users == users
    for user, items, scores in zip(got.users, got.items, got.scores, strict=True):
        want_items, want_scores = brute_force_top(recommender, user, 5, exclude_seen)
        assert items == want_items, user
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
        if exclude_seen:
            history = recommender.dataset.history(users.index(user))
            seen = {recommender.dataset.raw_items[i] for i in history}
            assert not seen & set(items)


def test_a_history_gives_what_its_user_gets(sasrec_run: Path) -> None:
    """A sequence model scores a history given as raw ids like the same user's history."""
    recommender = load_recommender(sasrec_run)
    dataset = recommender.dataset
    user = int(np.argmax(np.diff(dataset.item_offsets)))  # the longest history
    raw_history = [dataset.raw_items[i] for i in dataset.history(user)]
    by_history = recommender.for_history(raw_history, k=4)
    by_user = recommender.for_users([dataset.raw_users[user]], k=4)
    assert by_history.users == [HISTORY_USER]
    assert by_history.items == by_user.items
    np.testing.assert_allclose(by_history.scores, by_user.scores, rtol=1e-6)


def test_fewer_unseen_items_than_k_gives_a_shorter_list(b18_run: Path) -> None:
    """u3 has seen four of the six items: two are left to recommend, not k = 5."""
    got = load_recommender(b18_run).for_users(["u3"], k=5)
    assert sorted(got.items[0]) == ["A17", "C9"]
    assert all(np.isfinite(got.scores[0]))


def test_bad_requests_name_the_problem(sasrec_run: Path, bpr_run: Path) -> None:
    recommender = load_recommender(sasrec_run)
    n_items = recommender.dataset.n_items
    with pytest.raises(RecommendError, match=rf"k must be an integer in 1..{n_items}.*got 0"):
        recommender.for_users(None, k=0)
    with pytest.raises(RecommendError, match=rf"k must be an integer in 1..{n_items}"):
        recommender.for_users(None, k=n_items + 1)
    with pytest.raises(RecommendError, match="item\\(s\\) .nope. not in the run.s dataset"):
        recommender.for_history(["i1", "nope"])
    with pytest.raises(RecommendError, match="history is empty"):
        recommender.for_history([])
    with pytest.raises(RecommendError, match="bpr learns a vector per user"):
        load_recommender(bpr_run).for_history(["i1"])


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_all_users_are_written_to_a_file(sasrec_run: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"recs{suffix}"
    assert run_cli("recommend", sasrec_run, "--all-users", "--k", "3", "--out", out) == 0
    frame = pl.read_parquet(out) if suffix == ".parquet" else pl.read_csv(out)
    n_users = len(load_recommender(sasrec_run).dataset.raw_users)
    assert frame.columns == ["user", "rank", "item", "score"]
    assert frame.height == 3 * n_users
    assert frame["rank"].to_list() == [1, 2, 3] * n_users
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no partial file left


def test_cli_refuses_before_scoring(sasrec_run: Path, tmp_path: Path, capsys) -> None:
    assert run_cli("recommend", sasrec_run, "--all-users") == 2
    assert "--all-users needs --out" in capsys.readouterr().err
    assert run_cli("recommend", sasrec_run, "--user", "u1", "--out", tmp_path / "r.json") == 2
    assert "--out must end in .parquet or .csv" in capsys.readouterr().err
    assert run_cli("recommend", sasrec_run, "--user", "u1", "--out", tmp_path / "no/r.csv") == 2
    assert "directory" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_out_replaces_a_file_only_with_overwrite(sasrec_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "recs.csv"
    out.write_text("keep me")
    assert run_cli("recommend", sasrec_run, "--user", "u1", "--out", out) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert run_cli("recommend", sasrec_run, "--user", "u1", "--out", out, "--overwrite") == 0
    assert pl.read_csv(out)["user"].to_list() == ["u1"] * 10


def test_out_never_writes_into_the_run_or_its_dataset(sasrec_run: Path, capsys) -> None:
    """``--out RUN/items.parquet`` would replace the id table the run is read with."""
    before = (sasrec_run / "items.parquet").read_bytes()
    dataset_items = load_recommender(sasrec_run).dataset.path / "items.parquet"
    for out in (sasrec_run / "items.parquet", dataset_items):
        assert run_cli("recommend", sasrec_run, "--all-users", "--out", out, "--overwrite") == 2
        assert "whose files mrif keeps" in capsys.readouterr().err
    assert (sasrec_run / "items.parquet").read_bytes() == before


def test_printed_table_quotes_ids_holding_tabs(tmp_path: Path, capsys) -> None:
    log = 'user,item,rating,timestamp\n"x\ty",a,1,1\n"x\ty","b\tc",1,2\n'
    log += "".join(f"w{u},{item},1,{3 + t}\n" for u in range(3) for t, item in enumerate("abde"))
    (tmp_path / "log.csv").write_text(log)
    data = prepare_dataset(tmp_path / "log.csv", tmp_path / "data", n_eval_negatives=1, seed=0)
    run = train(data, "pop", tmp_path / "pop")
    capsys.readouterr()
    assert run_cli("recommend", run, "--user", "x\ty", "--k", "5", "--include-seen") == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out), delimiter="\t"))
    assert rows[0] == ["user", "rank", "item", "score"]
    assert {row[0] for row in rows[1:]} == {"x\ty"}
    assert sorted(row[2] for row in rows[1:]) == ["a", "b", "b\tc", "d", "e"]


def test_api_requests_are_checked(sasrec_run: Path, tmp_path: Path) -> None:
    recommender = load_recommender(sasrec_run)
    with pytest.raises(RecommendError, match="no users given"):
        recommender.for_users([])
    with pytest.raises(RecommendError, match="k must be an integer"):
        recommender.for_users(["u1"], k="3")  # type: ignore[arg-type]
    with pytest.raises(RecommendError, match="raw_users must be a list of raw ids; got 'u10'"):
        recommender.for_users("u10")
    with pytest.raises(RecommendError, match=r"user\(s\) 'nope1', 'nope2' not in"):
        recommender.for_users(["u1", "nope1", "nope2"])
    twice = recommender.for_users(["u2", "u1", "u2"], k=3)
    assert twice.users == ["u2", "u1"]
    out = write_recommendations(twice, str(tmp_path / "recs.parquet"))
    assert pl.read_parquet(out).height == 6
