"""Raw ids as integer codes, so that no step after reading holds a Python object per row.

Readers turn the user and item columns into polars Categoricals while they parse, each backed
by a fresh mapping (``id_dtype``: one per column and per read, so no other query shares it).
``encode_ids`` then renumbers the codes 0, 1, ... in order of first appearance in the file,
which makes them independent of the thread timing that assigned the categorical codes, and
keeps the raw id of each code in a Utf8 Series. Raw ids stay strings throughout (PROTOCOL.md
rule 1): a code only stands in for its string until the mapping is saved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

ID_ROLES = ("user", "item")


@dataclass
class EncodedInteractions:
    """Interactions with integer codes for ids, in file order.

    Attributes:
        frame: ``user`` and ``item`` (UInt32 codes), ``timestamp`` (unix seconds: UInt32 when
            whole, which they fit, else Float64; dtype Null when the source has none) and,
            when kept, ``rating`` (Float64).
        user_ids: raw id of each user code (Utf8, indexed by code).
        item_ids: raw id of each item code (Utf8, indexed by code).
    """

    frame: pl.DataFrame | None
    user_ids: pl.Series
    item_ids: pl.Series

    @property
    def n_rows(self) -> int:
        return self._frame().height

    def decoded(self) -> pl.DataFrame:
        """The frame with raw ids (Utf8) in place of the codes, whole seconds as Int64."""
        frame = self._frame()
        decoded = frame.with_columns(
            self.user_ids.gather(frame["user"]).alias("user"),
            self.item_ids.gather(frame["item"]).alias("item"),
        )
        if frame["timestamp"].dtype.is_integer():
            decoded = decoded.with_columns(pl.col("timestamp").cast(pl.Int64))
        return decoded

    def take_frame(self) -> pl.DataFrame:
        """Hand the frame over and drop this object's reference to it.

        A 100-million-row frame is a few GiB: once the caller filters it into new arrays, the
        original can be freed only if nothing else still points at it.
        """
        frame = self._frame()
        self.frame = None
        return frame

    def _frame(self) -> pl.DataFrame:
        if self.frame is None:
            raise RuntimeError("the frame was already handed over by take_frame()")
        return self.frame


def id_dtype() -> pl.DataType:
    """A Categorical backed by a fresh mapping that no other query shares."""
    return pl.Categorical(pl.Categories.random())


def encode_ids(frame: pl.DataFrame) -> EncodedInteractions:
    """Replace the ``user`` and ``item`` columns (Categorical or Utf8, no nulls) by codes 0..

    Codes follow the first appearance of each id in ``frame``'s row order.

    >>> encoded = encode_ids(pl.DataFrame({"user": ["u7", "u2", "u7"], "item": ["b", "a", "a"]}))
    >>> encoded.frame["user"].to_list(), encoded.user_ids.to_list()
    ([0, 1, 0], ['u7', 'u2'])
    >>> encoded.frame["item"].to_list(), encoded.item_ids.to_list()
    ([0, 1, 1], ['b', 'a'])
    """
    columns, raw_ids = {}, {}
    for role in ID_ROLES:
        column = frame[role]
        if not isinstance(column.dtype, pl.Categorical):
            column = column.cast(pl.String).cast(id_dtype())
        if column.null_count():
            raise ValueError(f"the {role} column must not hold nulls")
        physical = column.to_physical().to_numpy()
        first_rows, codes = renumber_by_first_appearance(physical)
        columns[role] = pl.Series(role, codes)
        raw_ids[role] = column.gather(first_rows).cast(pl.String).alias(f"raw_{role}")
    return EncodedInteractions(frame.with_columns(**columns), raw_ids["user"], raw_ids["item"])


def renumber_by_first_appearance(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows where each distinct code first appears, and every row's code renumbered 0.. in
    that order (uint32).

    ``codes`` are non-negative integers; ``codes[first_rows]`` lists the distinct old codes by
    their new code.

    >>> first_rows, new = renumber_by_first_appearance(np.array([7, 3, 7, 9, 3]))
    >>> first_rows.tolist(), new.tolist()
    ([0, 1, 3], [0, 1, 0, 2, 1])
    """
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint32)
    first_rows = pl.Series(codes).is_first_distinct().arg_true().to_numpy()
    lookup = np.zeros(int(codes.max()) + 1, dtype=np.uint32)
    lookup[codes[first_rows]] = np.arange(first_rows.size, dtype=np.uint32)
    return first_rows, lookup[codes]
