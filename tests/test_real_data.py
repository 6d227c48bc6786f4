"""Amazon Beauty from the data mirror, end to end: resolve, prepare, train each model briefly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrif.cli import main
from mrif.data.dataset import PreparedDataset
from mrif.data.registry import resolve_dataset
from mrif.models import MODEL_NAMES

BRIEF = [
    "--dim",
    "16",
    "--max-len",
    "10",
    "--epochs",
    "2",
    "--lr",
    "0.005",
    "--pretrain-epochs",
    "1",
    "--quiet",
]


@pytest.fixture(scope="module")
def beauty_dir(data_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MRIF_DATA_MIRROR", str(data_mirror))
        patch.setenv("MRIF_CACHE_DIR", str(cache))
        return resolve_dataset("amazon-beauty")


def test_beauty_resolves_through_the_mirror_and_prepares(beauty_dir: Path) -> None:
    dataset = PreparedDataset.load(beauty_dir)
    assert (dataset.n_users, dataset.n_items) == (22_363, 12_101)
    assert len(dataset.eval_users) == 22_363
    assert dataset.negatives.shape == (22_363, 100)


FASTER = {"bpr": ["--epochs", "6"], "ncf": ["--epochs", "6"], "din": ["--max-len", "5"]}
"""Factorisation models start from near-zero user and item vectors and need a few more epochs
to rise clearly above a random ranking. DIN runs its MLPs once per (user, item, history item)
under full ranking; a shorter history keeps the test brief."""


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_each_model_trains_briefly_on_beauty(beauty_dir: Path, tmp_path: Path, model: str) -> None:
    out = tmp_path / model
    args = ["train", "--data", str(beauty_dir), "--model", model, "--out", str(out), *BRIEF]
    assert main([*args, *FASTER.get(model, [])]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"]["n_users"] == 22_363
    # Two epochs on real data must already beat a random ranking of 101 candidates (hit@10 ~0.1).
    assert metrics["test"]["hit@10"] > 0.15
    assert 0 < metrics["test_full"]["hit@10"] < metrics["test"]["hit@10"]
