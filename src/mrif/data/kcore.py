"""Iterated k-core filtering (PROTOCOL.md rule 4, CASES.md B14)."""

from __future__ import annotations

import logging

import polars as pl

logger = logging.getLogger(__name__)


def kcore_filter(
    df: pl.DataFrame, k: int, *, user_col: str = "user", item_col: str = "item"
) -> pl.DataFrame:
    """Keep the rows whose user and item both have at least ``k`` interactions, to a fixed point.

    Each round drops every row of a user or item below ``k`` at once and recounts, until a
    round drops nothing. The k-core is the largest sub-table where every user and item has
    ``>= k`` rows, and it is unique, so the result does not depend on filtering users or
    items first. Counts are rows, so repeated (user, item) events each count (dedupe first if
    the recipe says so). Row order is kept.

    >>> df = pl.DataFrame({"user": ["u1", "u1", "u2", "u2", "u3"], "item": list("ababc")})
    >>> kcore_filter(df, 2)["user"].to_list()
    ['u1', 'u1', 'u2', 'u2']
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")

    rounds = 0
    while True:
        keep = (pl.len().over(user_col) >= k) & (pl.len().over(item_col) >= k)
        kept = df.filter(keep)
        rounds += 1
        if kept.height == df.height:
            break
        logger.debug("k-core round %d: %d -> %d rows", rounds, df.height, kept.height)
        df = kept
    logger.info("k-core k=%d: fixed point after %d rounds, %d rows", k, rounds, df.height)
    return df
