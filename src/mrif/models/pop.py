"""POP: rank items by how often they were bought in the training sequences."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mrif import PAD_ID
from mrif.config import ModelConfig
from mrif.models.base import SequentialRecommender


class Popularity(SequentialRecommender):
    """Every user gets the same ranking: items by their count in the training sequences.

    Args:
        n_items: number of real items (ids 1..n_items).
        config: unused beyond ``max_len``; kept so that every model is built the same way.

    Note:
        Counts come from the training sequences only, never from validation or test targets,
        so the ranking cannot see the events it is scored on. Published POP figures on the
        Amazon files (e.g. S3-Rec's 0.3386 hit@10 on Beauty) match counting every event, test
        targets included, so they are not comparable. Rare items tie often; ties count against
        the target (rule 11).
    """

    name = "pop"
    is_trainable = False

    def __init__(self, n_items: int, config: ModelConfig) -> None:
        super().__init__()
        self.n_items = n_items
        self.config = config
        self.counts: torch.Tensor
        self.register_buffer("counts", torch.zeros(n_items + 1))

    def fit_statistics(self, train_sequences: Sequence[np.ndarray]) -> None:
        parts = [np.asarray(s, dtype=np.int64) for s in train_sequences]
        items = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        counts = np.bincount(items, minlength=self.n_items + 1)
        counts[PAD_ID] = 0
        self.counts.copy_(torch.from_numpy(counts[: self.n_items + 1]).float())

    def step_scores(
        self, item_seq: torch.Tensor, targets: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.counts[targets]

    def candidate_scores(
        self, item_seq: torch.Tensor, candidates: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        scores = self.counts[candidates]  # (B, C) or (C,)
        if candidates.dim() == 1:
            return scores.expand(item_seq.shape[0], -1)
        return scores
