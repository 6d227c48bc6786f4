"""MRIF's interest aggregation layer (paper section 2.2, eq. 8-11) without look-ahead.

Each level slides a centred window of ``W = 2w + 1`` steps over the previous level. A centred
window at step i reaches w steps *ahead* of i, so the aggregate at i depends on where the
history ends (rule 22): scoring the item after step t must see zeros past t, exactly as if the
history ended there. Level l reaches at most ``l * w`` steps ahead, so a position's value takes
one of ``R + 1`` forms, ``R = n_levels * w``: truncated r = 0, 1, ..., R - 1 steps after it,
or not truncated (r = R). We compute all forms at once, as *variants*
``V[:, r, i] = aggregate at i when the history ends at i + r``; every step of a sequence can
then be scored in one pass with the values it is allowed to see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AGGREGATORS = ("mean", "max", "attn")


def shift_steps(x: torch.Tensor, offset: int) -> torch.Tensor:
    """``out[..., i, :] = x[..., i + offset, :]``, zero where ``i + offset`` leaves [0, L).

    x: (..., L, D). Returns the same shape.
    """
    if offset == 0:
        return x
    seq_len = x.shape[-2]
    if abs(offset) >= seq_len:
        return torch.zeros_like(x)
    if offset > 0:
        return F.pad(x[..., offset:, :], (0, 0, 0, offset))
    return F.pad(x[..., :offset, :], (0, 0, -offset, 0))


class WindowAggregation(nn.Module):
    """Stacked window aggregation, computed for every truncation variant.

    Args:
        aggregator: ``mean`` (window sum divided by W), ``max`` (the window's vector with the
            largest L2 norm) or ``attn`` (softmax over learned per-offset scores, one set per
            level, initialised equal so that training starts from the mean).
        n_levels: number of stacked levels (paper: 2).
        half_window: w, for windows of 2w + 1 steps (paper: w = 1).

    Note:
        The paper's eq. (9) writes a plain sum for the mean aggregator; we divide by W, which
        its name and Figure 2 imply and which keeps the levels on one scale (rule 20).
    """

    def __init__(self, aggregator: str, n_levels: int, half_window: int) -> None:
        super().__init__()
        if aggregator not in AGGREGATORS:
            raise ValueError(
                f"aggregator must be one of {', '.join(AGGREGATORS)}; got {aggregator!r}"
            )
        self.aggregator = aggregator
        self.n_levels = n_levels
        self.half_window = half_window
        self.n_variants = n_levels * half_window + 1
        window = 2 * half_window + 1
        self.offset_scores = (
            nn.Parameter(torch.zeros(n_levels, window)) if aggregator == "attn" else None
        )

    def forward(self, interests: torch.Tensor, is_item: torch.Tensor) -> list[torch.Tensor]:
        """Aggregate level 0 into levels 1..n_levels.

        Args:
            interests: (B, L, D) level-0 interests (the extractor output), zero on padding.
            is_item: (B, L) True on real history steps.

        Returns:
            ``n_levels + 1`` tensors of shape (B, R + 1, L, D): ``[l][:, r, i]`` is level l at
            step i when the history ends r steps after i (r = R: not truncated).
        """
        n_variants, w = self.n_variants, self.half_window
        keep = is_item[:, None, :, None].to(interests.dtype)  # (B, 1, L, 1)

        level = interests.unsqueeze(1).expand(-1, n_variants, -1, -1)  # (B, R+1, L, D)
        levels = [level]
        for depth in range(self.n_levels):
            variants = []
            for r in range(n_variants):
                window = []
                for offset in range(-w, w + 1):
                    ahead = r - offset  # steps between the neighbour and the history's end
                    if ahead < 0:
                        window.append(torch.zeros_like(level[:, 0]))
                    else:
                        source = level[:, min(ahead, n_variants - 1)]  # (B, L, D)
                        window.append(shift_steps(source, offset))
                variants.append(self._combine(torch.stack(window, dim=1), depth))  # (B, L, D)
            level = torch.stack(variants, dim=1) * keep  # (B, R+1, L, D)
            levels.append(level)
        return levels

    def _combine(self, window: torch.Tensor, depth: int) -> torch.Tensor:
        """window: (B, W, L, D) -> (B, L, D)."""
        if self.aggregator == "mean":
            return window.mean(dim=1)
        if self.aggregator == "max":
            strongest = window.norm(dim=-1).argmax(dim=1)  # (B, L)
            index = strongest[:, None, :, None].expand(-1, 1, -1, window.shape[-1])
            return window.gather(1, index).squeeze(1)
        assert self.offset_scores is not None
        weights = torch.softmax(self.offset_scores[depth], dim=0)  # (W,)
        return torch.einsum("w,bwld->bld", weights, window)
