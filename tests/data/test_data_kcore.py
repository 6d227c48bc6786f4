"""k-core filtering reaches the fixed point whatever the filter order (PROTOCOL.md rule 4)."""

from collections import Counter

import numpy as np
import polars as pl
import pytest

from mrif.data.kcore import kcore_filter, kcore_mask


def one_pass(pairs: list[tuple[str, str]], k: int, sides: tuple[int, int]) -> list:
    """One filter pass per side (0 = users, 1 = items), in the given order."""
    for side in sides:
        counts = Counter(p[side] for p in pairs)
        pairs = [p for p in pairs if counts[p[side]] >= k]
    return pairs


def reference_kcore(pairs: list[tuple[str, str]], k: int, users_first: bool) -> list:
    """Slow, obvious filter: repeat the passes until nothing changes."""
    while True:
        kept = one_pass(pairs, k, (0, 1) if users_first else (1, 0))
        if kept == pairs:
            return kept
        pairs = kept


def frame(pairs: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema=["user", "item"], orient="row")


def test_b14_kcore_fixed_point():
    pairs = [
        ("u1", "a"),
        ("u1", "b"),
        ("u2", "a"),
        ("u2", "b"),
        ("u3", "b"),
        ("u3", "c"),
        ("u4", "c"),
    ]
    expected = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")]

    kept = kcore_filter(frame(pairs), 2)

    assert kept.rows() == expected
    assert reference_kcore(pairs, 2, users_first=True) == expected
    assert reference_kcore(pairs, 2, users_first=False) == expected
    # One pass is not enough, in either order (the reported fault).
    assert ("u3", "b") in one_pass(pairs, 2, (0, 1))
    assert ("u3", "c") in one_pass(pairs, 2, (1, 0))


@pytest.mark.parametrize("seed", range(5))
def test_kcore_matches_slow_reference_in_both_orders(seed):
    rng = np.random.default_rng(seed)
    pairs = [(f"u{u}", f"i{i}") for u, i in rng.integers(0, [40, 25], size=(150, 2))]
    kept = kcore_filter(frame(pairs), 3).rows()
    assert kept == reference_kcore(pairs, 3, users_first=True)
    assert kept == reference_kcore(pairs, 3, users_first=False)
    if kept:
        result = frame(kept)
        assert result["user"].value_counts()["count"].min() >= 3
        assert result["item"].value_counts()["count"].min() >= 3


def test_kcore_counts_repeated_events_and_keeps_order():
    df = frame([("u1", "a"), ("u2", "b"), ("u1", "a"), ("u2", "c")])
    assert kcore_filter(df, 2).rows() == [("u1", "a"), ("u1", "a")]
    assert kcore_filter(df, 1).equals(df)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_kcore_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        kcore_filter(frame([("u", "a")]), k)


@pytest.mark.parametrize("seed", range(3))
def test_kcore_mask_on_sparse_codes_matches_the_reference(seed):
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 30, size=200) * 7, rng.integers(0, 20, size=200) * 1000
    pairs = [(f"u{u}", f"i{i}") for u, i in zip(users, items, strict=True)]
    expected = reference_kcore(pairs, 3, users_first=True)
    keep = kcore_mask(users, items, 3)
    assert [pair for pair, kept in zip(pairs, keep, strict=True) if kept] == expected
