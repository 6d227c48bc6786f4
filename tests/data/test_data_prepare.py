"""prepare_dataset: sorting, id mapping, leave-one-out, frozen negatives, atomic output."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mrif.data.dataset import PreparedDataset
from mrif.data.prepare import prepare_dataset

# Tiny catalogues leave most users short of 100 unseen items; B06 checks that warning.
pytestmark = pytest.mark.filterwarnings("ignore:.*whole unseen pool is used:UserWarning")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def prepare_and_load(source: Path, tmp_path: Path, **options) -> PreparedDataset:
    return PreparedDataset.load(prepare_dataset(source, tmp_path / "prepared", **options))


def raw(ds: PreparedDataset, ids) -> list[str]:
    return [ds.raw_items[i] for i in ids]


def random_sequences(tmp_path: Path, n_users: int = 30, n_items: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(n_users):
        items = rng.choice(n_items, size=rng.integers(3, 12), replace=False)
        lines.append(" ".join([f"u{u}", *(f"i{i}" for i in items)]))
    # One user touching every item makes all of them appear in the catalogue.
    lines.append(" ".join(["all", *(f"i{i}" for i in range(n_items))]))
    return write(tmp_path / "random.txt", "\n".join(lines) + "\n")


def test_b08_padding_id_not_a_real_item(tmp_path):
    source = write(
        tmp_path / "b08.csv",
        "user,item,rating,timestamp\nu1,5,4,100\nu1,0,3,200\nu2,7,5,150\nu2,0,2,300\nu2,5,1,400\n",
    )
    with pytest.warns(UserWarning, match="train-only"):
        ds = prepare_and_load(source, tmp_path)

    # First appearance in the sorted histories: 5 -> 1, 0 -> 2, 7 -> 3; 0 stays padding.
    assert ds.n_items == 3
    assert ds.raw_items == ["<pad>", "5", "0", "7"]
    assert ds.raw_item_to_id("0") == 2
    left_padded = [np.pad(ds.history(u), (4 - ds.history(u).size, 0)) for u in (0, 1)]
    assert left_padded[0].tolist() == [0, 0, 1, 2]
    assert left_padded[1].tolist() == [0, 3, 2, 1]
    assert [int((row != 0).sum()) for row in left_padded] == [2, 3]


def test_b13_test_item_not_visible_in_training(tmp_path):
    source = write(tmp_path / "b13.txt", "A 1 2 3 9\nB 1 2 4 9\nC 2 1 5 9\n")
    ds = prepare_and_load(source, tmp_path, n_eval_negatives=3)

    train = [raw(ds, ds.train_sequence(u)) for u in range(ds.n_users)]
    assert train == [["1", "2"], ["1", "2"], ["2", "1"]]
    assert raw(ds, ds.valid_targets) == ["3", "4", "5"]
    assert raw(ds, ds.test_targets) == ["9", "9", "9"]
    pairs = [(seq[:t], seq[t]) for seq in train for t in range(1, len(seq))]
    assert pairs == [(["1"], "2"), (["1"], "2"), (["2"], "1")]
    # POP fitted on the training sequences only sees items 1 and 2.
    pop = {item: sum(seq.count(item) for seq in train) for item in ds.raw_items[1:]}
    assert pop == {"1": 3, "2": 3, "3": 0, "9": 0, "4": 0, "5": 0}
    for row, user in enumerate(ds.eval_users):
        negatives = ds.negatives[row, : ds.n_negatives[row]]
        assert not set(negatives) & set(ds.history(user))


def test_b15_short_users_are_train_only(tmp_path):
    source = write(tmp_path / "b15.txt", "u1 x\nu2 p q\nu3 a b c\nu4 d e f g\n")
    with pytest.warns(UserWarning, match="2 of 4 users .* train-only"):
        out = prepare_dataset(source, tmp_path / "prepared", n_eval_negatives=2)
    ds = PreparedDataset.load(out)

    assert [ds.raw_users[u] for u in ds.eval_users] == ["u3", "u4"]
    assert ds.train_lengths.tolist() == [1, 2, 1, 2]
    assert raw(ds, ds.train_sequence(2)) == ["a"]
    assert raw(ds, ds.train_sequence(3)) == ["d", "e"]
    assert raw(ds, ds.valid_targets) == ["b", "f"]
    assert raw(ds, ds.test_targets) == ["c", "g"]
    test_inputs = [raw(ds, ds.history(u)[: ds.train_lengths[u] + 1]) for u in ds.eval_users]
    assert test_inputs == [["a", "b"], ["d", "e", "f"]]
    assert all(ds.train_lengths[ds.eval_users] >= 1)  # no empty input history anywhere

    split = pl.read_parquet(out / "split.parquet")
    assert split["valid_target"].to_list()[:2] == [None, None]
    assert split["test_target"].to_list()[:2] == [None, None]
    assert ds.meta["n_eval_users"] == 2
    assert ds.meta["n_train_only_users"] == 2


def test_b06_eval_negatives_exactly_the_unseen_pool(tmp_path):
    items = " ".join(str(i) for i in range(6, 106))
    source = write(tmp_path / "b06.txt", f"u 1 2 3 4 5\nv {items}\n")
    for seed in range(4):
        with pytest.warns(UserWarning, match="1 of 2 evaluated users have fewer than"):
            ds = prepare_and_load(source, tmp_path / f"seed{seed}", seed=seed)
        u_negatives = raw(ds, ds.negatives[0, : ds.n_negatives[0]])
        assert sorted(u_negatives, key=int) == [str(i) for i in range(6, 106)]
        assert "5" not in u_negatives
        # v has seen 6..105, so its pool {1..5} is short: used whole, padded with 0, counted.
        assert raw(ds, ds.negatives[1, :5]) == ["1", "2", "3", "4", "5"]
        assert ds.n_negatives.tolist() == [100, 5]
        assert not ds.negatives[1, 5:].any()
        assert ds.meta["n_short_negative_users"] == 1


def test_negatives_deterministic_per_seed(tmp_path):
    source = random_sequences(tmp_path)
    first = prepare_and_load(source, tmp_path / "a", seed=0)
    again = prepare_and_load(source, tmp_path / "b", seed=0)
    other = prepare_and_load(source, tmp_path / "c", seed=1)

    assert np.array_equal(first.negatives, again.negatives)
    assert not np.array_equal(first.negatives, other.negatives)
    for ds in (first, other):
        assert ds.meta["n_short_negative_users"] == 1  # only the user who saw everything
        for row, user in enumerate(ds.eval_users[:-1]):
            negatives = ds.negatives[row]
            assert np.unique(negatives).size == 100
            assert negatives.min() >= 1 and negatives.max() <= ds.n_items
            assert not set(negatives) & set(ds.history(user))


def test_stable_sort_ties_keep_file_order(tmp_path):
    source = write(
        tmp_path / "ties.csv",
        "user,item,timestamp\nu,c,5\nw,x,9\nu,a,1\nu,b,5\nw,y,2\nu,d,1\nw,z,2\n",
    )
    out = prepare_dataset(source, tmp_path / "prepared")
    ds = PreparedDataset.load(out)

    assert ds.raw_users == ["u", "w"]  # users by first appearance in the file
    assert raw(ds, ds.history(0)) == ["a", "d", "c", "b"]
    assert raw(ds, ds.history(1)) == ["y", "z", "x"]
    assert ds.raw_items[1:] == ["a", "d", "c", "b", "y", "z", "x"]
    histories = pl.read_parquet(out / "histories.parquet")
    assert histories["timestamps"].to_list() == [[1, 1, 5, 5], [2, 2, 9]]
    assert ds.meta["recipe"]["sort"] == "stable by timestamp, ties in file order"


def test_sequence_files_keep_file_order(tmp_path):
    source = write(tmp_path / "seq.txt", "u c a b\nw z y x\nu d\n")
    out = prepare_dataset(source, tmp_path / "prepared", n_eval_negatives=1)
    ds = PreparedDataset.load(out)
    assert raw(ds, ds.history(0)) == ["c", "a", "b", "d"]
    assert pl.read_parquet(out / "histories.parquet")["timestamps"].to_list() == [None, None]
    assert ds.meta["recipe"]["sort"] == "file order"


def test_duplicates_kept_unless_dedupe(tmp_path):
    source = write(tmp_path / "dup.csv", "user,item,timestamp\nu,a,3\nu,b,2\nu,a,1\nu,c,4\n")
    kept = prepare_and_load(source, tmp_path / "kept", n_eval_negatives=1)
    deduped = prepare_and_load(source, tmp_path / "deduped", dedupe=True, n_eval_negatives=1)
    assert raw(kept, kept.history(0)) == ["a", "b", "a", "c"]
    assert raw(deduped, deduped.history(0)) == ["a", "b", "c"]  # the earliest event is kept
    assert deduped.meta["recipe"]["dedupe"] is True
    assert deduped.meta["n_interactions"] == 3
    assert deduped.meta["source"]["n_rows"] == 4


def test_k_core_in_prepare_reaches_fixed_point(tmp_path):
    source = write(
        tmp_path / "b14.csv",
        "user,item\nu1,a\nu1,b\nu2,a\nu2,b\nu3,b\nu3,c\nu4,c\n",
    )
    with pytest.warns(UserWarning, match="train-only"):
        ds = prepare_and_load(source, tmp_path, k_core=2, columns={"timestamp": None})
    assert ds.raw_users == ["u1", "u2"]
    assert ds.raw_items[1:] == ["a", "b"]
    assert ds.meta["recipe"]["k_core"] == 2
    with pytest.raises(ValueError, match="k_core=3 removed every interaction"):
        prepare_dataset(source, tmp_path / "none", k_core=3, columns={"timestamp": None})


def test_output_layout_contract(tmp_path):
    source = write(tmp_path / "t.csv", "uid,iid,ts\nu,a,1.5\nu,b,2\nu,c,3\nv,a,1\n")
    with pytest.warns(UserWarning):
        out = prepare_dataset(
            source,
            tmp_path / "prepared",
            columns={"user": "uid", "item": "iid", "timestamp": "ts"},
            n_eval_negatives=5,
            name="tiny",
        )

    meta = json.loads((out / "meta.json").read_text())
    assert set(meta) == {
        "format_version", "name", "source", "recipe", "sampling_seed", "n_eval_negatives",
        "n_users", "n_items", "n_interactions", "n_eval_users", "n_train_only_users",
        "n_short_negative_users", "split",
    }  # fmt: skip
    assert meta["name"] == "tiny"
    assert meta["source"]["format"] == "csv" and meta["source"]["n_rows"] == 4
    assert meta["split"] == "leave-one-out: last=test, second-to-last=valid"
    i32, lst = pl.Int32, pl.List
    schemas = {
        "items": {"item_id": i32, "raw_item": pl.String},
        "users": {"user_id": i32, "raw_user": pl.String},
        "histories": {"user_id": i32, "items": lst(i32), "timestamps": lst(pl.Float64)},
        "split": {"user_id": i32, "train_len": i32, "valid_target": i32, "test_target": i32},
        "negatives": {"user_id": i32, "negatives": lst(i32)},
    }
    for name, schema in schemas.items():
        assert dict(pl.read_parquet(out / f"{name}.parquet").schema) == schema, name
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["meta.json", *(f"{name}.parquet" for name in schemas)]
    )


def test_failure_midway_leaves_no_out_dir(tmp_path, monkeypatch):
    source = random_sequences(tmp_path)
    real_write = pl.DataFrame.write_parquet
    calls = []

    def failing_write(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        return real_write(self, path, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing_write)
    parent = tmp_path / "cache"
    with pytest.raises(OSError, match="simulated"):
        prepare_dataset(source, parent / "out")
    assert not (parent / "out").exists()
    assert list(parent.iterdir()) == []  # the temp directory is gone too


def test_out_dir_not_overwritten_without_consent(tmp_path):
    source = random_sequences(tmp_path)
    out = tmp_path / "out"
    out.mkdir()  # an empty directory may be filled
    prepare_dataset(source, out, seed=0)
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        prepare_dataset(source, out, seed=1)
    assert json.loads((out / "meta.json").read_text())["sampling_seed"] == 0

    prepare_dataset(source, out, seed=1, overwrite=True)
    assert json.loads((out / "meta.json").read_text())["sampling_seed"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k_core": 0}, "k_core must be None or a positive integer; got 0"),
        ({"seed": -1}, "seed must be a non-negative integer; got -1"),
        ({"n_eval_negatives": 2.5}, "n_eval_negatives must be a non-negative integer; got 2.5"),
        ({"columns": {"usr": "u"}}, r"columns keys must be among .*; got \['usr'\]"),
    ],
)
def test_bad_options_are_named(tmp_path, options, message):
    source = write(tmp_path / "s.txt", "u a b c\n")
    with pytest.raises(ValueError, match=message):
        prepare_dataset(source, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()
