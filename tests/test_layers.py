"""Dropout and attention in ``mrif.models.layers`` against torch's own kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mrif.models.layers import Dropout, attention, dropout


def test_dropout_is_the_identity_when_not_training_or_at_zero() -> None:
    x = torch.randn(4, 5)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    assert Dropout(0.5).eval()(x) is x


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_zeroes_a_fraction_p_and_scales_the_rest(p: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(200_000) + 1.0  # never zero, so a zero means dropped
    out = dropout(x, p, training=True)
    dropped = out == 0
    assert abs(dropped.float().mean().item() - p) < 0.005
    torch.testing.assert_close(out[~dropped], x[~dropped] / (1 - p))


def test_dropout_gradient_is_the_scaled_keep_mask() -> None:
    torch.manual_seed(0)
    x = torch.ones(1000, requires_grad=True)
    out = dropout(x, 0.25, training=True)
    out.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, (out.detach() != 0).float() / 0.75)


def test_dropout_draws_follow_the_torch_seed() -> None:
    x = torch.ones(64)
    torch.manual_seed(3)
    first = dropout(x, 0.5, training=True)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(x, 0.5, training=True))


def _qkv(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.randn(3, 2, 6, 4, generator=generator) for _ in range(3))  # type: ignore[return-value]


def _causal_bool_mask() -> torch.Tensor:
    return torch.ones(6, 6, dtype=torch.bool).tril()[None, None]


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_attention_with_dropout_path_equals_torch_kernel(kind: str) -> None:
    """A drop probability too small to drop anything takes the explicit path; it must give
    the fused kernel's numbers for both mask kinds."""
    q, k, v = _qkv(torch.Generator().manual_seed(0))
    mask = _causal_bool_mask()
    if kind == "float":
        bias = torch.randn(2, 6, 6, generator=torch.Generator().manual_seed(1))
        mask = bias.masked_fill(~mask, -1e9)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask, 1e-12), expected)


def test_attention_dropout_is_unbiased() -> None:
    """Averaged over many draws, dropping attention weights gives the undropped output."""
    q, k, v = _qkv(torch.Generator().manual_seed(0))
    mask = _causal_bool_mask()
    torch.manual_seed(0)
    draws = torch.stack([attention(q, k, v, mask, 0.3) for _ in range(4000)])
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (draws.mean(0) - expected).abs().max().item() < 0.05
    assert (draws[0] - expected).abs().max().item() > 0.1  # one draw does differ


def test_attention_dropout_never_reaches_masked_keys() -> None:
    q, k, v = _qkv(torch.Generator().manual_seed(0))
    mask = _causal_bool_mask()
    changed = v.clone()
    changed[..., -1, :] += 100.0  # the newest key: hidden from every query but the last
    torch.manual_seed(5)
    before = attention(q, k, v, mask, 0.5)
    torch.manual_seed(5)
    after = attention(q, k, changed, mask, 0.5)
    torch.testing.assert_close(after[..., :-1, :], before[..., :-1, :])


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_rejects_probabilities_outside_zero_one(p: float) -> None:
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        Dropout(p)
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        dropout(torch.ones(3), p, training=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dropout_keeps_the_dtype_and_the_rate(dtype: torch.dtype) -> None:
    """The mask is drawn in float32: a bfloat16 draw is too coarse and keeps 0.898 at p=0.1."""
    torch.manual_seed(0)
    out = dropout(torch.ones(2_000_000, dtype=dtype), 0.1, training=True)
    assert out.dtype == dtype
    assert abs((out != 0).double().mean().item() - 0.9) < 0.0008


def test_attention_dropout_drops_weights_not_outputs() -> None:
    """The first query may attend to the first key only: dropping its one weight zeroes the
    whole output row or keeps it as v / (1 - p); dropping outputs would zero single entries."""
    q, k, v = (t.repeat(200, 1, 1, 1) for t in _qkv(torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    first_row = attention(q, k, v, _causal_bool_mask(), 0.5)[:, :, 0]  # (600, 2, 4)
    kept = (first_row != 0).all(-1)
    assert ((first_row == 0).all(-1) | kept).all()
    torch.testing.assert_close(first_row[kept], (v[:, :, 0] / 0.5)[kept])
    assert 0.4 < kept.float().mean().item() < 0.6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_attention_dropout_in_half_precision(dtype: torch.dtype, kind: str) -> None:
    q, k, v = (t.to(dtype) for t in _qkv(torch.Generator().manual_seed(0)))
    mask = _causal_bool_mask()
    if kind == "float":
        mask = torch.zeros(6, 6).masked_fill(~mask, -1e9)  # float32 bias on half inputs
    out = attention(q, k, v, mask, 0.3)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
