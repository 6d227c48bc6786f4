"""The interface every sequential model implements, and the loss they share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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

    Every method also takes ``users``, the (B,) user ids of the rows. Models that learn a
    vector per user (BPR, NCF, Caser) set ``uses_users`` and need it; the others ignore it.
    """

    name: str = "base"
    config: ModelConfig
    n_items: int
    default_lr: float = 1e-3
    """Adam learning rate used when the config leaves ``lr`` unset."""
    uses_users: bool = False
    """True if scores depend on the user id as well as the history."""
    is_trainable: bool = True
    """False for models fitted by counting (POP): training is skipped, ``fit_statistics`` is
    all they need."""
    supports_softmax_loss: bool = False
    """True if :meth:`all_item_step_scores` exists, which the ``ce`` loss needs: a model whose
    score is one dot product per item. MRIF attends over the history once per target item,
    so a softmax over the catalogue would cost a full ranking per training step."""

    def fit_statistics(self, train_sequences: Sequence[np.ndarray]) -> None:
        """Read what the model counts from the training sequences (index = user id) before
        training. Most models count nothing."""

    def step_scores(
        self, item_seq: torch.Tensor, targets: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Score ``targets[b, t]`` as the item after ``item_seq[b, :t + 1]``.

        Args:
            item_seq: (B, L) left-padded history.
            targets: (B, L) one target per step, or (B, L, T) several; the history is encoded
                once for all of them.
            users: (B,) user ids; required when ``uses_users``.

        Returns:
            Scores shaped like ``targets``; values at padding steps are meaningless.
        """
        raise NotImplementedError

    def candidate_scores(
        self, item_seq: torch.Tensor, candidates: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Score candidates for the item after the whole history.

        Args:
            item_seq: (B, L) left-padded history.
            candidates: (B, C) item ids per user, or (C,) ids shared by every user.
            users: (B,) user ids; required when ``uses_users``.

        Returns:
            (B, C) scores.
        """
        raise NotImplementedError

    def loss(
        self,
        item_seq: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Binary cross-entropy with one sampled negative per positive (paper eq. 13, rule 23).

        Steps whose input item is padding carry no example and are left out of the mean, so an
        all-padding row adds nothing (CASES.md B16).

        Args:
            item_seq: (B, L) left-padded inputs.
            positives: (B, L) the true next item at each step.
            negatives: (B, L) one sampled negative per step.
            users: (B,) user ids; required when ``uses_users``.
        """
        positive, negative = self.pair_scores(item_seq, positives, negatives, users)
        per_step = -F.logsigmoid(positive) - F.logsigmoid(-negative)  # (B, L)
        return mean_over_examples(per_step, item_seq)

    def all_item_step_scores(
        self, item_seq: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L, n_items + 1) scores of every item at every step; column 0 is padding."""
        raise NotImplementedError(f"{self.name} cannot score every item at every step")

    def softmax_loss(
        self, item_seq: torch.Tensor, positives: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy of the next item against the whole catalogue at every step (the
        ``ce`` option of rule 23; not the paper's loss). Padding is never a class."""
        logits = self.all_item_step_scores(item_seq, users)[..., PAD_ID + 1 :]  # real items
        classes = positives - (PAD_ID + 1)  # -1 where a step has no example
        per_step = F.cross_entropy(
            logits.transpose(1, 2), classes, ignore_index=-1, reduction="none"
        )
        return mean_over_examples(per_step, item_seq)

    def pair_scores(
        self,
        item_seq: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor,
        users: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) scores of each step's positive and of its negative, in one scoring pass."""
        scores = self.step_scores(item_seq, torch.stack([positives, negatives], dim=-1), users)
        return scores[..., 0], scores[..., 1]


def mean_over_examples(per_step: torch.Tensor, item_seq: torch.Tensor) -> torch.Tensor:
    """Mean of a (B, L) per-step loss over the steps whose input item is real."""
    is_example = item_seq != PAD_ID  # (B, L)
    n_examples = is_example.sum().clamp(min=1)
    return (per_step * is_example).sum() / n_examples


def require_users(model: SequentialRecommender, users: torch.Tensor | None) -> torch.Tensor:
    """The user ids a per-user model needs, or a clear error naming the model."""
    if users is None:
        raise ValueError(f"{model.name} learns a vector per user and needs the users argument")
    return users
