"""Per-user histories from encoded interactions: dedupe, k-core, stable time sort, final ids.

Every step works on integer codes with numpy and polars, never on a Python object per row or
per user, so that a log of 100 million rows fits in a few GiB:

* dedupe (a recipe option, rule 3): the earliest event of each (user, item) pair, ties in file
  order, found by a stable sort;
* k-core (rule 4): ``kcore_mask``, group-by counts iterated to the fixed point;
* ids (rule 5): users numbered 0.. by their first row in the file (among the rows the k-core
  keeps, when there is one); items 1.. by first appearance in the sorted histories; 0 is
  padding;
* order (rule 2): one stable sort on a 64-bit key, user id in the high 32 bits and the
  timestamp (or its rank, for fractional seconds) in the low 32, so ties keep file order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from mrif.data.codes import EncodedInteractions, renumber_by_first_appearance
from mrif.data.kcore import kcore_mask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Histories:
    """Stably time-sorted histories with their final ids. ``U`` users, ``N`` interactions.

    Attributes:
        offsets: (U + 1,) int64; user ``u``'s history is ``items[offsets[u]:offsets[u + 1]]``.
        items: (N,) int32 item ids in 1..n_items, each history oldest first.
        timestamps: (N,) unix seconds aligned with ``items``, uint32 when whole (they fit)
            or float64; None when the source has none.
        raw_users: (U,) Utf8 raw id of each user id.
        raw_items: (n_items,) Utf8 raw id of item ids 1..n_items, in that order.
    """

    offsets: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None
    raw_users: pl.Series
    raw_items: pl.Series

    @property
    def n_users(self) -> int:
        return self.raw_users.len()

    @property
    def n_items(self) -> int:
        return self.raw_items.len()


def build_histories(
    encoded: EncodedInteractions, *, k_core: int | None = None, dedupe: bool = False
) -> Histories:
    """Filter, sort and renumber ``encoded`` (whose frame it takes over, see ``take_frame``).

    Dedupe runs before the k-core, so the k-core then counts distinct pairs. The result may
    be empty when the k-core removes everything.
    """
    frame = encoded.take_frame()
    users = frame["user"].to_numpy()
    items = frame["item"].to_numpy()
    times = None if frame["timestamp"].dtype == pl.Null else frame["timestamp"].to_numpy()
    del frame

    # Users are numbered by their first row in the file; with a k-core, among the rows it
    # keeps. Without one, a first row that dedupe drops still counts (as it always has).
    if k_core is None:
        first_user_rows, user_ids = renumber_by_first_appearance(users)
        raw_users = encoded.user_ids.gather(users[first_user_rows])
    if dedupe:
        order = stable_time_order(users, times)  # any user codes group the rows alike
        pairs = users[order].astype(np.int64) * (int(items.max()) + 1) + items[order]
        keep = np.empty(users.size, dtype=bool)
        keep[order] = pl.Series(pairs).is_first_distinct().to_numpy()
        del order, pairs
        logger.info("dedupe: dropped %d repeated (user, item) events", users.size - keep.sum())
        users, items, times = _rows(keep, users, items, times)
        if k_core is None:
            user_ids = user_ids[keep]
    if k_core is not None:
        users, items, times = _rows(kcore_mask(users, items, k_core), users, items, times)
        first_user_rows, user_ids = renumber_by_first_appearance(users)
        raw_users = encoded.user_ids.gather(users[first_user_rows])
    del users

    lengths = np.bincount(user_ids, minlength=first_user_rows.size)
    order = stable_time_order(user_ids, times)
    del user_ids
    items = items[order]
    times = None if times is None else times[order]
    del order

    first_item_rows, item_ids = renumber_by_first_appearance(items)
    raw_items = encoded.item_ids.gather(items[first_item_rows])
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Histories(offsets, (item_ids + 1).astype(np.int32), times, raw_users, raw_items)


def stable_time_order(users: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
    """Row order that groups rows by user (ascending code) and sorts each group by timestamp,
    ties in the given row order (rule 2).

    ``users`` are codes below 2**31; integer ``timestamps`` are unix seconds in the readers'
    range, which fits in 32 bits. Fractional seconds are replaced by their dense rank.

    >>> stable_time_order(np.array([1, 0, 1, 0]), np.array([5, 9, 5, 2])).tolist()
    [3, 1, 0, 2]
    """
    key = users.astype(np.int64) << 32
    if timestamps is not None:
        if timestamps.dtype.kind == "f":
            timestamps = pl.Series(timestamps).rank("dense").to_numpy() - 1
        assert timestamps.size == 0 or (timestamps.min() >= 0 and timestamps.max() < 1 << 32)
        key |= timestamps.astype(np.int64, copy=False)
    # numpy's stable sort (timsort) needs a third of the transient memory of a polars sort
    # that keeps order (about 11 bytes per row against 34), for somewhat more time.
    return np.argsort(key, kind="stable")


def _rows(keep: np.ndarray, *columns: np.ndarray | None) -> list[Any]:
    """The rows ``keep`` of each column (None stays None)."""
    return [None if column is None else column[keep] for column in columns]
