"""Caser: convolutional sequence embedding (Tang and Wang, WSDM 2018)."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from mrif import PAD_ID
from mrif.config import ModelConfig
from mrif.models.base import SequentialRecommender, require_users
from mrif.models.layers import Dropout, init_weights, score_candidates, score_steps

MARKOV_ORDER = 5
"""Items in each convolution window (the paper's L)."""
N_VERTICAL = 4
"""Vertical filters (the paper's n_v)."""
N_HORIZONTAL = 16
"""Horizontal filters per height 1..L (the paper's n_h)."""


class Caser(SequentialRecommender):
    """The newest ``L`` items form an L x D "image": horizontal filters of every height
    1..L (max-pooled over time) catch union-level and point-level sequential patterns,
    vertical filters weigh the L items per dimension. A dense layer turns both into ``z``,
    which is concatenated with the user's own vector ``P_u`` and scored against a separate
    output embedding and bias per item.

    Args:
        n_items: number of real items (ids 1..n_items).
        n_users: number of users.
        config: ``dim`` is the item, user and ``z`` width; ``dropout`` applies before the
            dense layer.

    Note:
        Each training step's window holds the items up to that step (zeros before the first),
        so one pass scores every step (rule 22). Departures from the paper: one target and one
        sampled negative per step (the paper predicts T = 3 targets with 3 negatives each).
    """

    name = "caser"
    uses_users = True

    def __init__(self, n_items: int, n_users: int, config: ModelConfig) -> None:
        super().__init__()
        dim = config.dim
        self.n_items = n_items
        self.config = config
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=PAD_ID)
        self.user_embedding = nn.Embedding(max(n_users, 1), dim)
        self.vertical = nn.Conv2d(1, N_VERTICAL, (MARKOV_ORDER, 1))
        self.horizontal = nn.ModuleList(
            nn.Conv2d(1, N_HORIZONTAL, (height, dim)) for height in range(1, MARKOV_ORDER + 1)
        )
        self.dropout = Dropout(config.dropout)
        self.dense = nn.Linear(N_VERTICAL * dim + N_HORIZONTAL * MARKOV_ORDER, dim)
        self.output_embedding = nn.Embedding(n_items + 1, 2 * dim, padding_idx=PAD_ID)
        self.output_bias = nn.Embedding(n_items + 1, 1, padding_idx=PAD_ID)
        self.apply(init_weights)
        with torch.no_grad():
            self.item_embedding.weight[PAD_ID].zero_()
            self.output_embedding.weight[PAD_ID].zero_()
            self.output_bias.weight.zero_()

    def _states(self, item_seq: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded ids -> (B, L, 2D): ``[z_t; P_u]`` for every step t.

        The window of step t is the padded steps t - L + 1 .. t. Rather than convolving each
        window's L x D image apart, each filter runs once along the sequence: a horizontal
        filter of height h is a 1-d convolution whose outputs for the L - h + 1 placements
        inside a window are max-pooled, and the vertical filters weigh each window's rows.
        The numbers are those of the per-window convolutions, computed once per step instead
        of once per window that holds it.
        """
        batch, seq_len = item_seq.shape
        padded = self.item_embedding(F.pad(item_seq, (MARKOV_ORDER - 1, 0)))  # (B, L+M-1, D)
        windows = padded.unfold(1, MARKOV_ORDER, 1)  # (B, L, D, M)
        vertical_weight = self.vertical.weight.view(N_VERTICAL, MARKOV_ORDER)
        vertical = torch.einsum("bldm,fm->blfd", windows, vertical_weight)
        vertical = vertical + cast(torch.Tensor, self.vertical.bias)[:, None]  # (B, L, n_v, D)
        sequence = padded.transpose(1, 2)  # (B, D, L+M-1)
        horizontal = []
        for height, conv in enumerate(cast("list[nn.Conv2d]", self.horizontal), start=1):
            weight = conv.weight.squeeze(1).transpose(1, 2)  # (n_h, D, h)
            placements = F.relu(F.conv1d(sequence, weight, conv.bias))  # (B, n_h, L+M-h)
            pooled = F.max_pool1d(placements, MARKOV_ORDER - height + 1, stride=1)
            horizontal.append(pooled.transpose(1, 2))  # (B, L, n_h)
        features = torch.cat([vertical.flatten(2), *horizontal], dim=2)
        z = F.relu(self.dense(self.dropout(features)))  # (B, L, D)
        user = self.user_embedding(users)[:, None, :].expand(-1, seq_len, -1)
        return torch.cat([z, user], dim=-1)

    def step_scores(
        self, item_seq: torch.Tensor, targets: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        states = self._states(item_seq, require_users(self, users))  # (B, L, 2D)
        scores = score_steps(states, self.output_embedding(targets))
        return scores + self.output_bias(targets).squeeze(-1)

    def candidate_scores(
        self, item_seq: torch.Tensor, candidates: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        # Only the newest window matters: score from the last MARKOV_ORDER items alone.
        newest = item_seq[:, -MARKOV_ORDER:]
        state = self._states(newest, require_users(self, users))[:, -1]  # (B, 2D)
        scores = score_candidates(state, self.output_embedding(candidates))
        return scores + self.output_bias(candidates).squeeze(-1)
