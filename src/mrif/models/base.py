"""The interface every sequential model implements, and the loss they share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrif import PAD_ID
from mrif.config import ModelConfig


class SequentialRecommender(nn.Module):
    """A model that scores candidate next items from a left-padded item history.

    Subclasses implement :meth:`step_scores` (training: every step of a sequence in one pass)
    and :meth:`candidate_scores` (evaluation: the step after the whole history). The two must
    agree: ``step_scores(seq, targets)[:, t]`` equals ``candidate_scores(seq[:, :t + 1],
    targets[:, t:t + 1])`` (rule 22); the model contract tests check it for every model.
    """

    name: str = "base"
    config: ModelConfig
    n_items: int
    default_lr: float = 1e-3
    """Adam learning rate used when the config leaves ``lr`` unset."""

    def step_scores(self, item_seq: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Score ``targets[b, t]`` as the item after ``item_seq[b, :t + 1]``.

        Args:
            item_seq: (B, L) left-padded history.
            targets: (B, L) one target per step, or (B, L, T) several; the history is encoded
                once for all of them.

        Returns:
            Scores shaped like ``targets``; values at padding steps are meaningless.
        """
        raise NotImplementedError

    def candidate_scores(self, item_seq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Score candidates for the item after the whole history.

        Args:
            item_seq: (B, L) left-padded history.
            candidates: (B, C) item ids per user, or (C,) ids shared by every user.

        Returns:
            (B, C) scores.
        """
        raise NotImplementedError

    def loss(
        self, item_seq: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        """Binary cross-entropy with one sampled negative per positive (paper eq. 13, rule 23).

        Steps whose input item is padding carry no example and are left out of the mean, so an
        all-padding row adds nothing (CASES.md B16).

        Args:
            item_seq: (B, L) left-padded inputs.
            positives: (B, L) the true next item at each step.
            negatives: (B, L) one sampled negative per step.
        """
        is_example = item_seq != PAD_ID  # (B, L)
        scores = self.step_scores(item_seq, torch.stack([positives, negatives], dim=-1))
        per_step = -F.logsigmoid(scores[..., 0]) - F.logsigmoid(-scores[..., 1])  # (B, L)
        n_examples = is_example.sum().clamp(min=1)
        return (per_step * is_example).sum() / n_examples
