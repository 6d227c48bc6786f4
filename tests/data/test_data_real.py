"""Real data from $MRIF_DATA_MIRROR (the project's shared data folder); skipped without it."""

import os

import numpy as np
import pytest

from mrif.data import registry
from mrif.data.dataset import PreparedDataset
from mrif.data.registry import resolve_dataset, resolve_source

pytestmark = pytest.mark.skipif(
    not os.environ.get("MRIF_DATA_MIRROR"),
    reason="MRIF_DATA_MIRROR is unset; point it at the shared data folder to run real-data tests",
)


@pytest.fixture(autouse=True)
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRIF_CACHE_DIR", str(tmp_path / "cache"))

    def no_network(url, timeout=60.0):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(registry, "fetch_url", no_network)


@pytest.mark.parametrize("name", ["amazon-beauty", "amazon-sports", "movielens-100k"])
def test_mirror_files_match_registered_checksums(name):
    assert resolve_source(name).name.endswith(".gz")  # the mirror stores gzip copies


def test_prepare_beauty_matches_provenance_counts():
    ds = PreparedDataset.load(resolve_dataset("amazon-beauty"))

    assert (ds.n_users, ds.n_items, ds.item_values.size) == (22_363, 12_101, 198_502)
    assert ds.meta["n_eval_users"] == 22_363 and ds.eval_users.size == 22_363
    assert ds.meta["n_train_only_users"] == 0
    assert ds.meta["n_short_negative_users"] == 0
    assert ds.meta["recipe"]["sort"] == "file order"
    assert ds.negatives.shape == (22_363, 100) and (ds.n_negatives == 100).all()
    # The S3-Rec ids are already 1..n in first-appearance order, so the mapping is the identity.
    assert ds.raw_items[1:4] == ["1", "2", "3"] and ds.raw_users[:2] == ["1", "2"]
    assert np.diff(ds.item_offsets).min() == 5  # 5-core
