"""MRIF: multi-resolution interest fusion (Li, Yang and Zhang, SIGIR 2020)."""

from __future__ import annotations

import torch

from mrif import PAD_ID
from mrif.config import ConfigError, ModelConfig
from mrif.models.aggregation import WindowAggregation
from mrif.models.base import SequentialRecommender
from mrif.models.layers import MASK_FILL, SequenceEncoder

SHARED_LOGITS_BLOCK = 1 << 19
"""Most (B, L, C) fusion logits scored at once for shared candidates (2 MiB of float32)."""


class PretrainingMissingError(RuntimeError):
    """MRIF was asked to train or score before its extractor was initialised."""


class MRIF(SequentialRecommender):
    """Transformer interest extractor, stacked window aggregation, target-attentive fusion.

    Level 0 is the extractor output H^0 (paper eq. 7); levels 1..K come from
    :class:`WindowAggregation` (eq. 8-11). For a target item e, each level attends over the
    history with ``softmax(H^l e)`` and the weighted sums are added (eq. 12); the score is the
    dot product of that sum with e, i.e. ``sum_l sum_i a_li (H^l_i . e)``.

    Args:
        n_items: number of real items (ids 1..n_items).
        config: extractor and aggregation settings (``n_levels``, ``window``).
        aggregator: ``mean``, ``max`` or ``attn``.

    Note:
        The extractor must be initialised from a pre-trained SASRec encoder with
        :meth:`load_pretrained_extractor` before training (rule 19); the trainer refuses a cold
        start. The paper leaves the fusion logits unscaled and so do we.
    """

    default_lr = 1e-3

    def __init__(self, n_items: int, config: ModelConfig, aggregator: str) -> None:
        super().__init__()
        if config.window > config.max_len:
            raise ConfigError(
                f"window must be at most max_len={config.max_len} for MRIF; got {config.window}"
            )
        self.n_items = n_items
        self.config = config
        self.name = {"mean": "mrif-avg", "max": "mrif-max", "attn": "mrif-attn"}.get(
            aggregator, aggregator
        )
        self.encoder = SequenceEncoder(n_items, config)
        self.aggregation = WindowAggregation(aggregator, config.n_levels, config.half_window)
        self.extractor_is_pretrained: torch.Tensor
        self.register_buffer("extractor_is_pretrained", torch.tensor(False))

    def load_pretrained_extractor(self, encoder_state: dict[str, torch.Tensor]) -> None:
        """Copy a pre-trained ``SequenceEncoder`` state (e.g. ``SASRec.encoder``) into MRIF."""
        self.encoder.load_state_dict(encoder_state)
        self.extractor_is_pretrained.fill_(True)

    def _levels(self, item_seq: torch.Tensor) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
        is_item = item_seq != PAD_ID  # (B, L)
        interests = self.encoder(item_seq)  # (B, L, D), zero on padding
        return self.aggregation(interests, is_item), is_item

    def step_scores(
        self, item_seq: torch.Tensor, targets: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        one_target = targets.dim() == 2
        if one_target:
            targets = targets.unsqueeze(-1)
        batch, seq_len, n_targets = targets.shape
        levels, is_item = self._levels(item_seq)
        n_variants = self.aggregation.n_variants
        target_emb = self.encoder.item_embedding(targets)  # (B, L, T, D): targets of step t

        steps = torch.arange(seq_len, device=item_seq.device)
        lag = steps[:, None] - steps[None, :]  # (L, L): t - i
        can_attend = ((lag >= 0) & is_item[:, None, :]).unsqueeze(2)  # (B, L, 1, L)
        flat_targets = target_emb.reshape(batch, seq_len * n_targets, -1)  # (B, L*T, D)

        scores = torch.zeros(targets.shape, dtype=target_emb.dtype, device=item_seq.device)
        for level in levels:
            # Keys at lag >= R use the untruncated variant; nearer keys use variant r = lag.
            logits = torch.bmm(flat_targets, level[-1].transpose(1, 2))  # (B, L*T, L)
            logits = logits.view(batch, seq_len, n_targets, seq_len)  # (B, L, T, L)
            for r in range(min(n_variants - 1, seq_len)):
                if level[r] is level[-1]:
                    continue  # this variant is the untruncated one: nothing to replace
                # Key i = t - r of step t sees variant r: only steps t >= r have one.
                keys = level[r][:, : seq_len - r].unsqueeze(2)  # (B, L - r, 1, D)
                near = (target_emb[:, r:] * keys).sum(-1)  # (B, L - r, T), indexed by t - r
                # The lag-r diagonal (i = t - r) is written in place: bmm's backward does not
                # need its output, and a torch.where would copy all (B, L, T, L) logits.
                logits.diagonal(offset=-r, dim1=1, dim2=3).copy_(near.transpose(1, 2))
            scores = scores + _attend(logits, can_attend, dim=3)  # (B, L, T)
        return scores.squeeze(-1) if one_target else scores

    def candidate_scores(
        self, item_seq: torch.Tensor, candidates: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        seq_len = item_seq.shape[1]
        levels, is_item = self._levels(item_seq)
        n_variants = self.aggregation.n_variants
        cand_emb = self.encoder.item_embedding(candidates)  # (B, C, D) or (C, D)

        # The history ends at the last slot: step i sees variant min(L - 1 - i, R).
        n_truncated = min(n_variants - 1, seq_len)
        # Length-sorted evaluation batches are mostly free of padding; masking them would only
        # copy the (B, L, C) logits.
        can_attend = None if bool(is_item.all()) else is_item[:, :, None]
        visible = [_visible_steps(level, seq_len, n_truncated) for level in levels]
        if cand_emb.dim() == 3:
            return _fuse(visible, cand_emb, can_attend)
        # Items shared by every user (full ranking) are scored in blocks small enough for the
        # logits' softmax passes to stay in cache: on Beauty, about 40% faster than one pass.
        block = max(1, SHARED_LOGITS_BLOCK // (item_seq.shape[0] * seq_len))
        return torch.cat(
            [
                _fuse(visible, cand_emb[first : first + block], can_attend)
                for first in range(0, cand_emb.shape[0], block)
            ],
            dim=1,
        )


def _visible_steps(level: list[torch.Tensor], seq_len: int, n_truncated: int) -> torch.Tensor:
    """(B, L, D): the variant of each step seen from the end of the history, where step i
    sees variant ``min(L - 1 - i, R)``."""
    return torch.cat(
        [level[-1][:, : seq_len - n_truncated]]
        + [level[r][:, seq_len - 1 - r : seq_len - r] for r in reversed(range(n_truncated))],
        dim=1,
    )


def _fuse(
    visible: list[torch.Tensor], cand_emb: torch.Tensor, can_attend: torch.Tensor | None
) -> torch.Tensor:
    """Scores (B, C) of candidates (C, D) or (B, C, D): each level's attention-fused score,
    summed over the levels (B, L, D) in ``visible``."""
    scores = None
    for level in visible:
        # Steps before candidates, for shared (C, D) and per-user (B, C, D) candidates
        # alike: the softmax then runs along L across a contiguous row of candidates.
        # With L last, rows of Amazon's typical 5-10 steps made it ten times slower.
        logits = level @ cand_emb.transpose(-1, -2)  # (B, L, C)
        level_scores = _attend(logits, can_attend, dim=1)
        scores = level_scores if scores is None else scores + level_scores
    assert scores is not None
    return scores


def _attend(logits: torch.Tensor, can_attend: torch.Tensor | None, dim: int) -> torch.Tensor:
    """``sum_i softmax(logits)_i * logits_i`` over the allowed keys along ``dim``: the fused
    score of one level. ``can_attend`` broadcasts against ``logits`` (None: every key may be
    attended); the result drops ``dim``.
    """
    masked = logits if can_attend is None else logits.masked_fill(~can_attend, MASK_FILL)
    weights = torch.softmax(masked, dim=dim)
    return (weights * logits).sum(dim)
