"""Iterated k-core filtering (PROTOCOL.md rule 4, CASES.md B14)."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

logger = logging.getLogger(__name__)


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Which rows of the (user, item) table lie in its k-core, iterated to the fixed point.

    ``users`` and ``items`` are (N,) non-negative integer codes. Each round counts the rows of
    every user and item (``np.bincount``, a group-by count), drops at once every row of a user
    or item below ``k``, and recounts what is left, until a round drops nothing. The k-core is
    the largest sub-table where every user and item has ``>= k`` rows, and it is unique, so
    the result does not depend on filtering users or items first. Counts are rows, so
    repeated (user, item) events each count (dedupe first if the recipe says so).

    >>> kcore_mask(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 2]), 2).tolist()
    [True, True, True, True, False]
    """
    _check_k(k)
    kept_users, kept_items = users, items
    rounds = 0
    while True:
        rounds += 1
        # Compare per code, then gather one byte per row rather than an 8-byte count.
        enough = (np.bincount(kept_users) >= k)[kept_users]
        enough &= (np.bincount(kept_items) >= k)[kept_items]
        if enough.all():
            break
        kept_users, kept_items = kept_users[enough], kept_items[enough]
        logger.debug("k-core round %d: %d -> %d rows", rounds, enough.size, kept_users.size)
    logger.info("k-core k=%d: fixed point after %d rounds, %d rows", k, rounds, kept_users.size)
    # Counts only fall from round to round, so a row was dropped exactly when its user or its
    # item did not make it to the end: the k-core is the rows whose user and item both did.
    user_kept = np.zeros(int(users.max(initial=0)) + 1, dtype=bool)
    user_kept[kept_users] = True
    item_kept = np.zeros(int(items.max(initial=0)) + 1, dtype=bool)
    item_kept[kept_items] = True
    return user_kept[users] & item_kept[items]


def kcore_filter(
    df: pl.DataFrame, k: int, *, user_col: str = "user", item_col: str = "item"
) -> pl.DataFrame:
    """The rows of ``df`` in the k-core of its (user, item) pairs (see ``kcore_mask``).

    The id columns may hold any values; row order is kept.

    >>> df = pl.DataFrame({"user": ["u1", "u1", "u2", "u2", "u3"], "item": list("ababc")})
    >>> kcore_filter(df, 2)["user"].to_list()
    ['u1', 'u1', 'u2', 'u2']
    """
    _check_k(k)
    users, items = (_codes(df[column]) for column in (user_col, item_col))
    return df.filter(pl.Series(kcore_mask(users, items, k)))


def _codes(column: pl.Series) -> np.ndarray:
    """Integer codes of any column: equal values share a code, nulls the code 0."""
    return column.rank("dense").fill_null(0).to_numpy()


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
