"""PreparedDataset.load: arrays, lookups, and clear errors for incomplete directories."""

import json

import numpy as np
import pytest

from mrif.data.dataset import PreparedDataset
from mrif.data.prepare import prepare_dataset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def prepared(tmp_path):
    source = tmp_path / "s.txt"
    source.write_text("u1 a b c d\nu2 b c\nu3 e a c\n")
    return prepare_dataset(source, tmp_path / "prepared", n_eval_negatives=3, seed=5)


def test_load_builds_csr_and_split(prepared):
    ds = PreparedDataset.load(prepared)

    assert (ds.n_users, ds.n_items) == (3, 5)
    assert ds.item_offsets.dtype == np.int64 and ds.item_offsets.tolist() == [0, 4, 6, 9]
    assert ds.item_values.dtype == np.int32
    assert ds.item_values.tolist() == [1, 2, 3, 4, 2, 3, 5, 1, 3]
    assert ds.train_lengths.dtype == np.int32 and ds.train_lengths.tolist() == [2, 2, 1]
    assert ds.eval_users.tolist() == [0, 2]
    assert ds.valid_targets.tolist() == [3, 1] and ds.test_targets.tolist() == [4, 3]
    assert ds.history(2).tolist() == [5, 1, 3]
    assert ds.train_sequence(0).tolist() == [1, 2]
    assert ds.train_sequence(1).tolist() == [2, 3]  # train-only: the whole history
    assert ds.raw_users == ["u1", "u2", "u3"]
    assert ds.raw_items == ["<pad>", "a", "b", "c", "d", "e"]
    assert ds.raw_item_to_id("e") == 5
    assert ds.path == prepared and ds.meta["sampling_seed"] == 5


def test_negatives_padded_with_zero(prepared):
    ds = PreparedDataset.load(prepared)
    assert ds.negatives.shape == (2, 3) and ds.negatives.dtype == np.int32
    assert ds.n_negatives.tolist() == [1, 2]  # pools {e} and {b, d}
    assert ds.negatives.tolist() == [[5, 0, 0], [2, 4, 0]]


def test_lookup_errors(prepared):
    ds = PreparedDataset.load(prepared)
    with pytest.raises(KeyError, match="raw item 'zz' is not in dataset 's'"):
        ds.raw_item_to_id("zz")
    with pytest.raises(IndexError, match="user must be in 0..2; got 3"):
        ds.history(3)
    assert "n_users=3" in repr(ds)


def test_missing_file_names_the_path(prepared):
    (prepared / "negatives.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"prepared/negatives\.parquet: missing"):
        PreparedDataset.load(prepared)
    with pytest.raises(FileNotFoundError, match="nowhere: prepared dataset directory not found"):
        PreparedDataset.load(prepared.parent / "nowhere")


def test_format_version_mismatch_names_the_path(prepared):
    meta_path = prepared / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(ValueError, match=r"prepared/meta\.json: format_version must be 2; got 1"):
        PreparedDataset.load(prepared)
