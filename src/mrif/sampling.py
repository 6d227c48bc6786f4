"""Training negatives: uniform over the items a user never interacted with (rule 15)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

REJECTION_ROUNDS = 50
"""Rounds of vectorised rejection before the few remaining draws are made exactly."""


class NegativeSampler:
    """Draws items outside each user's whole history (validation and test targets included).

    Rejection sampling on sorted, padded histories does almost all the work in a few vectorised
    rounds; draws still rejected after ``REJECTION_ROUNDS`` (users who have seen most of the
    catalogue) are drawn exactly from the user's unseen pool, so the result never contains a
    seen item (CASES.md B07).

    Args:
        histories: one array of item ids per user (index = user id).
        n_items: catalogue size; items are 1..n_items.
        device: where sampled tensors live.
    """

    def __init__(
        self, histories: Sequence[np.ndarray], n_items: int, device: str | torch.device = "cpu"
    ) -> None:
        self.n_items = n_items
        self.device = torch.device(device)
        self._histories = histories
        # TODO(#4): a (n_users, longest history) table is fine for Amazon 5-cores; logs with
        # very long histories need a CSR layout here.
        longest = max((len(h) for h in histories), default=1)
        sentinel = n_items + 1  # sorts after every real item, never equal to a draw
        padded = np.full((len(histories), max(longest, 1)), sentinel, dtype=np.int64)
        for user, items in enumerate(histories):
            padded[user, : len(items)] = np.sort(items)
        self._sorted_histories = torch.from_numpy(padded).to(self.device)

    def sample(
        self, users: torch.Tensor, n_per_user: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Draw ``n_per_user`` negatives (with replacement across draws) for each user.

        Args:
            users: (B,) user ids.
            n_per_user: draws per user.
            generator: seeded generator on ``self.device``.

        Returns:
            (B, n_per_user) item ids, none of them in the user's history.
        """
        users = users.to(self.device)
        history = self._sorted_histories[users]  # (B, H)
        draws = self._uniform((len(users), n_per_user), generator)
        for _ in range(REJECTION_ROUNDS):
            rejected = self._is_seen(history, draws)
            n_rejected = int(rejected.sum())
            if n_rejected == 0:
                return draws
            draws[rejected] = self._uniform((n_rejected,), generator)
        rejected = self._is_seen(history, draws)
        for row, col in rejected.nonzero().tolist():
            draws[row, col] = self._exact_draw(int(users[row]), generator)
        return draws

    def _uniform(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        return torch.randint(1, self.n_items + 1, shape, generator=generator, device=self.device)

    @staticmethod
    def _is_seen(history: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """history: (B, H) sorted; draws: (B, N). True where the draw is in the history."""
        position = torch.searchsorted(history, draws).clamp(max=history.shape[1] - 1)
        return history.gather(1, position) == draws

    def _exact_draw(self, user: int, generator: torch.Generator) -> int:
        pool = np.setdiff1d(np.arange(1, self.n_items + 1), self._histories[user])
        if len(pool) == 0:
            raise ValueError(
                f"user {user} has interacted with all {self.n_items} items; "
                "no training negative can be drawn"
            )
        pick = torch.randint(0, len(pool), (1,), generator=generator, device=self.device)
        return int(pool[int(pick)])
