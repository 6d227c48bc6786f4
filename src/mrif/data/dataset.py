"""Load a prepared dataset directory (written by ``prepare.py``) into numpy arrays.

Layout, ``format_version`` 2:

* ``meta.json``: counts, source checksum, recipe, sampling seed.
* ``items.parquet``: ``item_id`` Int32 (1..n_items), ``raw_item`` Utf8. Id 0 is padding.
* ``users.parquet``: ``user_id`` Int32 (0..n_users-1), ``raw_user`` Utf8.
* ``histories.parquet``: ``user_id``, ``items`` List(Int32) sorted full history,
  ``timestamps`` List(Int64 or Float64), null when the source has none.
* ``split.parquet``: ``user_id``, ``train_len``, ``valid_target``, ``test_target`` (null for
  train-only users).
* ``negatives.parquet``: ``user_id`` (evaluated users), ``negatives`` List(Int32).

Version 2 draws each user's evaluation negatives from the user's own SplitMix64 stream
(``negatives.py``); version 1 drew them from one PCG64 stream over the users in order, so the
same seed gives other negatives, and a version-1 directory must be prepared again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

FORMAT_VERSION = 2
PAD_TOKEN = "<pad>"
DATASET_FILES = (
    "meta.json",
    "items.parquet",
    "users.parquet",
    "histories.parquet",
    "split.parquet",
    "negatives.parquet",
)


@dataclass(frozen=True, eq=False, repr=False)
class PreparedDataset:
    """Histories, leave-one-out split and frozen evaluation negatives of one dataset.

    Shapes: ``U`` users, ``E`` evaluated users, ``N`` interactions, ``C`` negatives per user.

    Attributes:
        item_offsets: (U + 1,) int64; user ``u``'s history is
            ``item_values[item_offsets[u]:item_offsets[u + 1]]``.
        item_values: (N,) int32 item ids in 1..n_items, each history sorted oldest first.
        train_lengths: (U,) int32; the first ``train_lengths[u]`` items of a history are its
            training sequence (length - 2 for evaluated users, the whole history otherwise).
        eval_users: (E,) int32, ascending; ``valid_targets`` and ``test_targets`` align with it.
        negatives: (E, C) int32 evaluation negatives, right-padded with 0 where a user's
            unseen pool was short; ``n_negatives`` (E,) int32 holds the real counts.
        raw_items: raw item ids by item id; index 0 is ``"<pad>"``.
        raw_users: raw user ids by user id.
    """

    path: Path
    meta: dict[str, Any]
    n_users: int
    n_items: int
    item_offsets: np.ndarray
    item_values: np.ndarray
    train_lengths: np.ndarray
    eval_users: np.ndarray
    valid_targets: np.ndarray
    test_targets: np.ndarray
    negatives: np.ndarray
    n_negatives: np.ndarray
    raw_items: list[str]
    raw_users: list[str]
    _item_index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        index = {raw: item for item, raw in enumerate(self.raw_items) if item > 0}
        object.__setattr__(self, "_item_index", index)  # frozen: set once, here

    @classmethod
    def load(cls, path: str | Path) -> PreparedDataset:
        """Read a directory written by ``prepare_dataset``; errors name the offending path."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: prepared dataset directory not found")
        for name in DATASET_FILES:
            if not (path / name).is_file():
                raise FileNotFoundError(
                    f"{path / name}: missing; {path} is not a complete prepared dataset "
                    "(run prepare_dataset again)"
                )
        meta = json.loads((path / "meta.json").read_text())
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path / 'meta.json'}: format_version must be {FORMAT_VERSION}; got {version!r} "
                "(prepare the dataset again with this version of mrif)"
            )

        items = pl.read_parquet(path / "items.parquet")
        users = pl.read_parquet(path / "users.parquet")
        histories = pl.read_parquet(path / "histories.parquet", columns=["user_id", "items"])
        split = pl.read_parquet(path / "split.parquet")
        negatives = pl.read_parquet(path / "negatives.parquet")
        n_users, n_items = int(meta["n_users"]), int(meta["n_items"])
        _expect_ids(path / "items.parquet", items["item_id"], 1, n_items)
        _expect_ids(path / "users.parquet", users["user_id"], 0, n_users)
        _expect_ids(path / "histories.parquet", histories["user_id"], 0, n_users)
        _expect_ids(path / "split.parquet", split["user_id"], 0, n_users)

        lengths = histories["items"].list.len().to_numpy()
        item_offsets = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(lengths, out=item_offsets[1:])
        item_values = histories["items"].explode().to_numpy().astype(np.int32)

        evaluated = split.filter(pl.col("valid_target").is_not_null())
        eval_users = evaluated["user_id"].to_numpy().astype(np.int32)
        if not np.array_equal(negatives["user_id"].to_numpy(), eval_users):
            raise ValueError(
                f"{path / 'negatives.parquet'}: user_id must list the evaluated users of "
                "split.parquet in the same order"
            )
        padded, counts = _pad_lists(negatives["negatives"], int(meta["n_eval_negatives"]))

        return cls(
            path=path,
            meta=meta,
            n_users=n_users,
            n_items=n_items,
            item_offsets=item_offsets,
            item_values=item_values,
            train_lengths=split["train_len"].to_numpy().astype(np.int32),
            eval_users=eval_users,
            valid_targets=evaluated["valid_target"].to_numpy().astype(np.int32),
            test_targets=evaluated["test_target"].to_numpy().astype(np.int32),
            negatives=padded,
            n_negatives=counts,
            raw_items=[PAD_TOKEN, *items["raw_item"].to_list()],
            raw_users=users["raw_user"].to_list(),
        )

    def history(self, user: int) -> np.ndarray:
        """Full sorted history of ``user`` (int32 item ids, oldest first)."""
        self._check_user(user)
        return self.item_values[self.item_offsets[user] : self.item_offsets[user + 1]]

    def train_sequence(self, user: int) -> np.ndarray:
        """The first ``train_lengths[user]`` items of the history (no valid or test target)."""
        self._check_user(user)
        start = self.item_offsets[user]
        return self.item_values[start : start + self.train_lengths[user]]

    def raw_item_to_id(self, raw: str) -> int:
        """Item id (1..n_items) of a raw item id string."""
        try:
            return self._item_index[raw]
        except KeyError:
            name = self.meta.get("name")
            raise KeyError(f"raw item {raw!r} is not in dataset {name!r}") from None

    def __repr__(self) -> str:
        return (
            f"PreparedDataset(name={self.meta.get('name')!r}, n_users={self.n_users}, "
            f"n_items={self.n_items}, n_eval_users={self.eval_users.size}, path='{self.path}')"
        )

    def _check_user(self, user: int) -> None:
        if not 0 <= user < self.n_users:
            raise IndexError(f"user must be in 0..{self.n_users - 1}; got {user}")


def _expect_ids(path: Path, ids: pl.Series, start: int, count: int) -> None:
    """Ids must be exactly ``start, start + 1, ..., start + count - 1`` in this order."""
    if not np.array_equal(ids.to_numpy(), np.arange(start, start + count)):
        raise ValueError(
            f"{path}: {ids.name} must run {start}..{start + count - 1} in order, as meta.json says"
        )


def _pad_lists(lists: pl.Series, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, width) int32 array right-padded with 0, and the (rows,) int32 lengths."""
    counts = lists.list.len().to_numpy().astype(np.int32)
    values = lists.explode().drop_nulls().to_numpy().astype(np.int32)
    padded = np.zeros((counts.size, width), dtype=np.int32)
    rows = np.repeat(np.arange(counts.size), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if counts.size else counts
    cols = np.arange(values.size) - np.repeat(starts, counts)
    padded[rows, cols] = values
    return padded, counts
