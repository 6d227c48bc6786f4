"""Evaluation negatives: vectorised draws equal a plain loop, are uniform, and ignore batching."""

from collections import Counter

import numpy as np
import pytest

from mrif.data import negatives
from mrif.data.negatives import draw_eval_negatives

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def slow_negatives(history, user: int, n_items: int, n: int, seed: int) -> list[int]:
    """The documented rule, one user at a time with Python integers."""
    pool = sorted(set(range(1, n_items + 1)) - {int(item) for item in history})
    if len(pool) <= n:
        return pool
    state = mix64(mix64((seed + GOLDEN) & MASK) ^ user)
    picked: list[int] = []
    draw = 0
    while len(picked) < n:
        draw += 1
        rank = (mix64((state + draw * GOLDEN) & MASK) * len(pool)) >> 64
        if rank not in picked:
            picked.append(rank)
    return sorted(pool[rank] for rank in picked)


def random_histories(seed: int, n_users: int, n_items: int, max_len: int):
    rng = np.random.default_rng(seed)
    histories = [
        rng.integers(1, n_items + 1, size=rng.integers(1, max_len)) for _ in range(n_users)
    ]
    offsets = np.concatenate([[0], np.cumsum([h.size for h in histories])])
    return histories, offsets, np.concatenate(histories).astype(np.int32)


@pytest.mark.parametrize(("n_items", "n", "max_len"), [(50, 10, 45), (400, 30, 60), (12, 5, 9)])
def test_eval_negatives_match_slow_reference(n_items, n, max_len):
    histories, offsets, values = random_histories(3, 40, n_items, max_len)
    users = np.arange(0, 40, 2)  # every other user, to check ids are the users' own

    fast, counts = draw_eval_negatives(offsets, values, users, n_items, n, seed=11)

    assert fast.shape == (users.size, n) and fast.dtype == np.int32
    for row, user in enumerate(users):
        expected = slow_negatives(histories[user], int(user), n_items, n, seed=11)
        assert counts[row] == len(expected)
        assert fast[row, : counts[row]].tolist() == expected
        assert not fast[row, counts[row] :].any()  # padded with 0


def test_pools_barely_larger_than_the_sample_need_many_draws():
    # 101 unseen items for 100 negatives: almost every draw repeats, and rows need redrawing.
    offsets, values = np.array([0, 4, 8]), np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=np.int32)
    fast, counts = draw_eval_negatives(offsets, values, np.array([0, 1]), 105, 100, seed=2)
    for user in (0, 1):
        expected = slow_negatives(values[offsets[user] : offsets[user + 1]], user, 105, 100, 2)
        assert fast[user].tolist() == expected
    assert counts.tolist() == [100, 100]


def test_negatives_do_not_depend_on_the_block_size(monkeypatch):
    _, offsets, values = random_histories(5, 300, 2000, 30)
    users = np.arange(300)
    whole, _ = draw_eval_negatives(offsets, values, users, 2000, 100, seed=0)
    monkeypatch.setattr(negatives, "_BLOCK_USERS", 7)
    blocked, _ = draw_eval_negatives(offsets, values, users, 2000, 100, seed=0)
    assert np.array_equal(whole, blocked)
    assert not np.array_equal(whole, draw_eval_negatives(offsets, values, users, 2000, 100, 1)[0])


def test_negatives_are_uniform_over_the_unseen_pool():
    # 4,000 users who all saw items 1..10 of 30: each of the 20 unseen items should be drawn
    # by a quarter of them (5 of 20), within 5 standard deviations (about 137).
    n_users = 4000
    offsets = np.arange(0, 10 * n_users + 1, 10)
    values = np.tile(np.arange(1, 11, dtype=np.int32), n_users)
    fast, counts = draw_eval_negatives(offsets, values, np.arange(n_users), 30, 5, seed=0)
    assert (counts == 5).all()
    assert all(np.unique(row).size == 5 for row in fast)  # without replacement
    drawn = Counter(fast.ravel().tolist())
    assert set(drawn) == set(range(11, 31))
    assert all(
        abs(count - n_users / 4) < 5 * np.sqrt(n_users * 0.25 * 0.75) for count in drawn.values()
    )
    # Pairs are uniform too: each of the 190 pairs of unseen items appears about equally.
    pairs = Counter(
        (a, b) for row in fast.tolist() for i, a in enumerate(row) for b in row[i + 1 :]
    )
    expected = n_users * 10 / 190  # each sample holds 10 pairs
    assert len(pairs) == 190
    assert all(abs(count - expected) < 5 * np.sqrt(expected) for count in pairs.values())
