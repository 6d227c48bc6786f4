"""MRIF's interest aggregation layer (paper section 2.2, eq. 8-11) without look-ahead.

Each level slides a centred window of ``W = 2w + 1`` steps over the previous level. A centred
window at step i reaches w steps *ahead* of i, so the aggregate at i depends on where the
history ends (rule 22): scoring the item after step t must see zeros past t, exactly as if the
history ended there. Level l reaches at most ``l * w`` steps ahead, so a position's value takes
one of ``R + 1`` forms, ``R = n_levels * w``: truncated r = 0, 1, ..., R - 1 steps after it,
or not truncated (r = R). We compute all forms at once, as *variants*
``V[r][:, i] = aggregate at i when the history ends at i + r``; every step of a sequence can
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

    def forward(self, interests: torch.Tensor, is_item: torch.Tensor) -> list[list[torch.Tensor]]:
        """Aggregate level 0 into levels 1..n_levels.

        Args:
            interests: (B, L, D) level-0 interests (the extractor output), zero on padding.
            is_item: (B, L) True on real history steps.

        Returns:
            ``n_levels + 1`` lists of ``R + 1`` tensors (B, L, D): ``[l][r][:, i]`` is level l
            at step i when the history ends r steps after i (r = R: not truncated). Variants
            that cannot differ are the same tensor: level l is untruncated from r = l * w on.
        """
        n_variants, w = self.n_variants, self.half_window
        keep = is_item[:, :, None].to(interests.dtype)  # (B, L, 1)
        level = [interests] * n_variants
        levels = [level]
        for depth in range(self.n_levels):
            distinct = min((depth + 1) * w, n_variants - 1) + 1
            variants = [self._window(level, r, depth) * keep for r in range(distinct)]
            level = variants + [variants[-1]] * (n_variants - distinct)
            levels.append(level)
        return levels

    def _window(self, level: list[torch.Tensor], r: int, depth: int) -> torch.Tensor:
        """Variant ``r`` of the next level: each neighbour at ``offset`` is the previous
        level's variant for a history ending ``r - offset`` steps after it, or zero (left out
        of the window, which the three aggregators treat as a zero vector) when that is
        past the end."""
        w = self.half_window
        offsets = [offset for offset in range(-w, w + 1) if r - offset >= 0]
        neighbours = [
            shift_steps(level[min(r - offset, self.n_variants - 1)], offset) for offset in offsets
        ]
        return self._combine(neighbours, [offset + w for offset in offsets], depth)

    def _combine(
        self, neighbours: list[torch.Tensor], slots: list[int], depth: int
    ) -> torch.Tensor:
        """Neighbours (B, L, D) at window ``slots`` (0..W-1; absent slots are zero) -> (B, L, D)."""
        if self.aggregator == "max":
            window = torch.stack(neighbours, dim=1)  # (B, n, L, D)
            strongest = window.norm(dim=-1).argmax(dim=1)  # (B, L)
            index = strongest[:, None, :, None].expand(-1, 1, -1, window.shape[-1])
            return window.gather(1, index).squeeze(1)
        if self.aggregator == "mean":
            total = neighbours[0]
            for neighbour in neighbours[1:]:
                total = total + neighbour
            return total / (2 * self.half_window + 1)
        assert self.offset_scores is not None
        weights = torch.softmax(self.offset_scores[depth], dim=0)  # (W,)
        total = neighbours[0] * weights[slots[0]]
        for neighbour, slot in zip(neighbours[1:], slots[1:], strict=True):
            total = total + neighbour * weights[slot]
        return total
