"""MRIF's window aggregation: hand-computed values and a plain-loop reference (rule 20, 22)."""

from __future__ import annotations

import pytest
import torch

from mrif.models.aggregation import WindowAggregation, shift_steps


def plain_aggregate(values: list[torch.Tensor], kind: str, w: int, weights=None) -> list:
    """One level over a plain list of vectors, zeros outside it (paper eq. 8-11)."""
    zero = torch.zeros_like(values[0])
    out = []
    for i in range(len(values)):
        window = [values[j] if 0 <= j < len(values) else zero for j in range(i - w, i + w + 1)]
        if kind == "mean":
            out.append(sum(window) / len(window))
        elif kind == "max":
            norms = [float(v.norm()) for v in window]
            out.append(window[norms.index(max(norms))])
        else:
            out.append(sum(a * v for a, v in zip(weights, window, strict=True)))
    return out


def test_shift_steps_fills_zeros() -> None:
    x = torch.tensor([[1.0], [2.0], [3.0]])
    assert shift_steps(x, 1).flatten().tolist() == [2.0, 3.0, 0.0]
    assert shift_steps(x, -2).flatten().tolist() == [0.0, 0.0, 1.0]
    assert shift_steps(x, 5).flatten().tolist() == [0.0, 0.0, 0.0]


def test_mean_window_by_hand() -> None:
    """H0 = [1, 2, 3], w = 1: untruncated [1, 2, 5/3]; ending at each step [1/3, 1, 5/3]."""
    agg = WindowAggregation("mean", n_levels=1, half_window=1)
    interests = torch.tensor([[[1.0], [2.0], [3.0]]])
    levels = agg(interests, torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(levels[1][-1][0, :, 0], torch.tensor([1.0, 2.0, 5 / 3]))
    torch.testing.assert_close(levels[1][0][0, :, 0], torch.tensor([1 / 3, 1.0, 5 / 3]))


def test_max_picks_largest_norm_vector() -> None:
    agg = WindowAggregation("max", n_levels=1, half_window=1)
    interests = torch.tensor([[[3.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]])
    levels = agg(interests, torch.ones(1, 3, dtype=torch.bool))
    untruncated = levels[1][-1][0]
    assert untruncated.tolist() == [[3.0, 0.0], [3.0, 0.0], [-1.0, -1.0]]


def test_padding_counts_as_zero() -> None:
    agg = WindowAggregation("mean", n_levels=1, half_window=1)
    interests = torch.tensor([[[0.0], [6.0], [3.0]]])
    is_item = torch.tensor([[False, True, True]])
    levels = agg(interests, is_item)
    torch.testing.assert_close(levels[1][-1][0, :, 0], torch.tensor([0.0, 3.0, 3.0]))


@pytest.mark.parametrize("kind", ["mean", "max", "attn"])
@pytest.mark.parametrize(("n_levels", "w"), [(2, 1), (3, 2), (1, 0), (0, 1), (2, 2)])
def test_variants_equal_plain_aggregation_of_each_prefix(kind: str, n_levels: int, w: int) -> None:
    """The fast path computes every truncation at once; each must equal aggregating the prefix
    that ends at step t with a plain loop."""
    torch.manual_seed(0)
    agg = WindowAggregation(kind, n_levels=n_levels, half_window=w)
    if agg.offset_scores is not None:
        torch.nn.init.normal_(agg.offset_scores)
    seq_len, dim = 7, 3
    interests = torch.randn(1, seq_len, dim)
    levels = agg(interests, torch.ones(1, seq_len, dtype=torch.bool))
    n_variants = agg.n_variants
    for end in range(seq_len):
        prefix = [interests[0, i] for i in range(end + 1)]
        for depth in range(n_levels + 1):
            for i in range(end + 1):
                fast = levels[depth][min(end - i, n_variants - 1)][0, i]
                torch.testing.assert_close(fast, prefix[i], atol=1e-5, rtol=1e-5)
            if depth < n_levels:
                weights = None
                if agg.offset_scores is not None:
                    weights = torch.softmax(agg.offset_scores[depth], 0).detach()
                prefix = plain_aggregate(prefix, kind, w, weights)


def test_rejects_unknown_aggregator() -> None:
    with pytest.raises(ValueError, match="aggregator must be one of mean, max, attn; got 'sum'"):
        WindowAggregation("sum", n_levels=2, half_window=1)
