"""Shared fixtures: a small synthetic prepared dataset and the real-data mirror."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mrif.data.dataset import PreparedDataset
from mrif.data.prepare import prepare_dataset

# Test inputs are tiny: one thread is faster than two and leaves a core for other work.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_mirror() -> Path:
    """The real-data mirror (``MRIF_DATA_MIRROR``). Skipped when unset, except in CI, where
    ``MRIF_REQUIRE_DATA=1`` turns the skip into a failure so real-data tests always run."""
    mirror = os.environ.get("MRIF_DATA_MIRROR")
    if not mirror or not Path(mirror).is_dir():
        message = "MRIF_DATA_MIRROR is not set to a directory; real-data tests need it"
        if os.environ.get("MRIF_REQUIRE_DATA"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(mirror)


def write_sequence_file(path: Path, n_users: int, n_items: int, seed: int) -> Path:
    """One user per line, ``user item item ...``, with a learnable next-item pattern."""
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(n_users):
        length = int(rng.integers(3, 12))
        start = int(rng.integers(0, n_items))
        items = [(start + step * 3) % n_items + 1 for step in range(length)]
        lines.append(" ".join([f"u{user}"] + [f"i{item}" for item in items]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    source = write_sequence_file(root / "tiny.txt", n_users=60, n_items=40, seed=0)
    return prepare_dataset(source, root / "prepared", n_eval_negatives=20, seed=0)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_dataset_dir: Path) -> PreparedDataset:
    return PreparedDataset.load(tiny_dataset_dir)
