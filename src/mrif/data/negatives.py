"""Frozen evaluation negatives (PROTOCOL.md rule 9), drawn for blocks of users at once.

For each evaluated user, ``n_negatives`` items are drawn uniformly without replacement from
the pool of items the user never touched (whole history, validation and test targets
included). A pool of at most ``n_negatives`` items is taken whole (CASES.md B06). Each user's
negatives are sorted ascending: candidate order carries no meaning when ties never favour the
target.

Randomness: each user draws from their own SplitMix64 stream (Steele, Lea and Flood, "Fast
splittable pseudorandom number generators", OOPSLA 2014), started at
``mix64(mix64(seed + GOLDEN) ^ user)``. Draw ``j = 1, 2, ...`` is
``x_j = mix64(start + j * GOLDEN)`` (64-bit wrapping arithmetic) and picks the pool rank
``floor(x_j * pool_size / 2**64)``; a rank already picked is skipped, and the first
``n_negatives`` distinct ranks are the sample, a uniformly random subset of the pool. Rank
``r`` is the ``r``-th unseen item in ascending order. A user's negatives therefore depend on
the seed, their id, their history and ``n_items`` only (not on other users, nor on how users
are batched), which lets every step run on blocks of users as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment, 2**64 / golden ratio
_MASK64 = (1 << 64) - 1
_BLOCK_USERS = 1 << 14  # users per block: bounds the (block, draws) arrays


def draw_eval_negatives(
    item_offsets: np.ndarray,
    item_values: np.ndarray,
    users: np.ndarray,
    n_items: int,
    n_negatives: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Negatives of ``users`` (E,): an (E, n_negatives) int32 array of item ids, sorted and
    right-padded with 0 where a pool is short, and the (E,) int32 count of real ones.

    ``item_offsets`` (U + 1,) and ``item_values`` (N,) hold every user's history as in
    ``PreparedDataset``; item ids run 1..n_items. ``seed`` is used modulo 2**64.

    >>> offsets, values = np.array([0, 5]), np.arange(1, 6)
    >>> negatives, counts = draw_eval_negatives(offsets, values, np.array([0]), 105, 100, 7)
    >>> negatives[0].tolist() == list(range(6, 106)), counts.tolist()
    (True, [100])
    """
    blocks = list(iter_eval_negatives(item_offsets, item_values, users, n_items, n_negatives, seed))
    if not blocks:
        return np.zeros((0, n_negatives), dtype=np.int32), np.zeros(0, dtype=np.int32)
    return np.concatenate([b[1] for b in blocks]), np.concatenate([b[2] for b in blocks])


def iter_eval_negatives(
    item_offsets: np.ndarray,
    item_values: np.ndarray,
    users: np.ndarray,
    n_items: int,
    n_negatives: int,
    seed: int,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``draw_eval_negatives`` block by block: (users, negatives, counts) for consecutive
    slices of ``users``, so that only one block's arrays are held at a time."""
    seed_start = _mix64(np.array([(seed + GOLDEN) & _MASK64], dtype=np.uint64))
    for start in range(0, users.size, _BLOCK_USERS):
        block = np.asarray(users[start : start + _BLOCK_USERS])
        negatives, counts = _block_negatives(
            item_offsets, item_values, block, n_items, n_negatives, seed_start
        )
        yield block, negatives, counts


def _block_negatives(
    item_offsets: np.ndarray,
    item_values: np.ndarray,
    users: np.ndarray,
    n_items: int,
    n_negatives: int,
    seed_start: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Negatives and counts for one block of ``B`` users."""
    n_users, span = users.size, n_items + 1
    starts = item_offsets[users]
    lengths = item_offsets[users + 1] - starts

    # Each user's distinct seen items, ascending, as keys local_user * span + item.
    local = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    rows = np.arange(local.size) - np.repeat(np.cumsum(lengths) - lengths - starts, lengths)
    seen = np.sort(local * span + item_values[rows])
    seen = seen[np.r_[True, seen[1:] != seen[:-1]]]  # np.unique, without its hash table
    seen_user = seen // span
    n_seen = np.bincount(seen_user, minlength=n_users)
    first_seen = np.cumsum(n_seen) - n_seen
    # Unseen items below the i-th seen item s_i of a user: s_i - (i + 1); non-decreasing.
    unseen_below = seen - seen_user * span - (np.arange(seen.size) - first_seen[seen_user]) - 1
    gaps = seen_user * span + unseen_below  # ascending over the whole block

    pool = n_items - n_seen
    counts = np.minimum(pool, n_negatives).astype(np.int32)
    columns = np.arange(n_negatives)
    ranks = np.broadcast_to(columns, (n_users, n_negatives)).copy()  # short pools: all ranks
    drawn = pool > n_negatives
    if drawn.any():
        streams = _mix64(seed_start ^ users[drawn].astype(np.uint64))
        ranks[drawn] = _first_distinct_ranks(streams, pool[drawn], n_negatives)

    # Rank r is item r + 1 plus the number of the user's seen items with r or fewer unseen
    # items below them.
    queries = np.arange(n_users)[:, None] * span + ranks  # (B, C), ascending
    below = np.searchsorted(gaps, queries, side="right") - first_seen[:, None]
    is_real = columns[None, :] < counts[:, None]
    negatives = np.where(is_real, ranks + 1 + below, 0).astype(np.int32)
    return negatives, counts


def _first_distinct_ranks(streams: np.ndarray, pool: np.ndarray, n: int) -> np.ndarray:
    """(S, n) int64: the first ``n`` distinct ranks drawn from each stream, ascending.

    Every pool is larger than ``n``. Most rows have no repeat among their first ``n`` draws
    (pools far larger than n**2); rows with a repeat draw twice as many, and so on.
    """
    out = np.empty((streams.size, n), dtype=np.int64)
    todo = np.arange(streams.size)
    width = n
    while todo.size:
        ranks = _ranks(streams[todo], pool[todo], width)
        ordered = np.sort(ranks, axis=1)
        if width == n:
            done = (ordered[:, 1:] != ordered[:, :-1]).all(axis=1)
            out[todo[done]] = ordered[done]
        else:
            done, picked = _first_n_distinct(ranks, n)
            out[todo[done]] = np.sort(picked, axis=1)
        todo = todo[~done]
        width *= 2
    return out


def _first_n_distinct(ranks: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of ``ranks`` (R, W) hold ``n`` distinct values, and for those rows the first
    ``n`` distinct values in draw order, (done rows, n)."""
    order = np.argsort(ranks, axis=1, kind="stable")
    ordered = np.take_along_axis(ranks, order, axis=1)
    first_in_order = np.ones(ranks.shape, dtype=bool)
    first_in_order[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    is_first = np.empty_like(first_in_order)
    np.put_along_axis(is_first, order, first_in_order, axis=1)  # back to draw order
    n_distinct = np.cumsum(is_first, axis=1)
    done = n_distinct[:, -1] >= n
    take = is_first & (n_distinct <= n)
    return done, ranks[done][take[done]].reshape(-1, n)


def _ranks(streams: np.ndarray, pool: np.ndarray, width: int) -> np.ndarray:
    """(S, width) int64: ranks ``floor(x_j * pool / 2**64)`` of draws j = 1..width."""
    steps = np.arange(1, width + 1, dtype=np.uint64) * np.uint64(GOLDEN)
    draws = _mix64(streams[:, None] + steps[None, :])
    # x * pool / 2**64 exactly, without 128-bit integers: x = high * 2**32 + low, and
    # floor((high * pool + floor(low * pool / 2**32)) / 2**32) loses no carry. Pools are
    # below 2**32, so neither product nor the sum overflows 64 bits.
    size = pool.astype(np.uint64)[:, None]
    high, low = draws >> np.uint64(32), draws & np.uint64(0xFFFFFFFF)
    return ((high * size + ((low * size) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
