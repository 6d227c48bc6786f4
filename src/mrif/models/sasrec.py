"""SASRec: self-attentive sequential recommendation (Kang and McAuley, ICDM 2018)."""

from __future__ import annotations

import torch

from mrif.config import ModelConfig
from mrif.models.base import SequentialRecommender
from mrif.models.layers import SequenceEncoder, score_candidates, score_steps


class SASRec(SequentialRecommender):
    """Causal transformer over the history; the state at step t scores the item at t + 1.

    Args:
        n_items: number of real items (ids 1..n_items).
        config: width, heads, layers, dropout and ``max_len``.

    Note:
        Uses MRIF's post-norm transformer layers (paper eq. 5-6) rather than SASRec's pre-norm
        blocks, so that its weights are exactly MRIF's pre-trained interest extractor
        (rule 19). Positions count from the oldest item in the window (see
        ``forward_positions``); items are scored by a dot product with the shared item
        embedding, trained with binary cross-entropy and one negative per step, as in the paper.
    """

    name = "sasrec"
    default_lr = 2e-3
    supports_softmax_loss = True

    def __init__(self, n_items: int, config: ModelConfig) -> None:
        super().__init__()
        self.n_items = n_items
        self.config = config
        self.encoder = SequenceEncoder(n_items, config)

    def step_scores(
        self, item_seq: torch.Tensor, targets: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        states = self.encoder(item_seq)  # (B, L, D)
        return score_steps(states, self.encoder.item_embedding(targets))

    def all_item_step_scores(
        self, item_seq: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.encoder(item_seq) @ self.encoder.item_embedding.weight.T  # (B, L, N + 1)

    def candidate_scores(
        self, item_seq: torch.Tensor, candidates: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        user_state = self.encoder(item_seq)[:, -1]  # (B, D): the newest item's slot
        return score_candidates(user_state, self.encoder.item_embedding(candidates))
