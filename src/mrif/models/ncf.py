"""NeuMF: neural collaborative filtering, GMF and MLP fused (He et al., WWW 2017)."""

from __future__ import annotations

import torch
from torch import nn

from mrif import PAD_ID
from mrif.config import ModelConfig
from mrif.models.base import SequentialRecommender, require_users
from mrif.models.layers import Dropout, init_weights

PAIR_BUDGET = 2**20
"""Largest (user x candidate x width) block of the MLP branch held at once while scoring."""


class NCF(SequentialRecommender):
    """NeuMF: a GMF branch (element-wise product of user and item vectors) beside an MLP
    branch over the concatenated user and item vectors; their outputs are concatenated and
    mapped to one logit. The history order is ignored.

    Args:
        n_items: number of real items (ids 1..n_items).
        n_users: number of users.
        config: ``dim`` is the width of each branch's embeddings; the MLP tower halves it
            twice (2D -> D -> D/2 -> D/4, the paper's tower shape); ``dropout`` applies
            between tower layers.

    Note:
        Departures from the paper: one sampled negative per positive instead of four, and no
        pre-training of the GMF and MLP branches (the paper reports NeuMF without
        pre-training as close behind).
    """

    name = "ncf"
    uses_users = True

    def __init__(self, n_items: int, n_users: int, config: ModelConfig) -> None:
        super().__init__()
        dim = config.dim
        self.n_items = n_items
        self.config = config
        self.gmf_user = nn.Embedding(max(n_users, 1), dim)
        self.gmf_item = nn.Embedding(n_items + 1, dim, padding_idx=PAD_ID)
        self.mlp_user = nn.Embedding(max(n_users, 1), dim)
        self.mlp_item = nn.Embedding(n_items + 1, dim, padding_idx=PAD_ID)
        widths = [2 * dim, dim, max(dim // 2, 1), max(dim // 4, 1)]
        self.mlp_input = nn.Linear(widths[0], widths[1])
        tower: list[nn.Module] = []
        for inner, outer in zip(widths[1:-1], widths[2:], strict=True):
            tower += [nn.ReLU(), Dropout(config.dropout), nn.Linear(inner, outer)]
        self.mlp_tower = nn.Sequential(*tower, nn.ReLU())
        self.predict = nn.Linear(dim + widths[-1], 1)
        self.apply(init_weights)
        with torch.no_grad():
            self.gmf_item.weight[PAD_ID].zero_()
            self.mlp_item.weight[PAD_ID].zero_()

    def _pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of users (B,) against items (B, ...) per user or (C,) shared: (B, ...).

        The output layer over ``[p_u * q_i; mlp]`` is split into its GMF and MLP parts; the
        GMF part is ``(p_u * w_gmf) . q_i``, a matrix product for shared items. The first MLP
        layer over ``[p_u; q_i]`` is likewise ``W_u p_u + W_i q_i``, computed per user and per
        item and broadcast, never materialising the concatenation.
        """
        dim = self.config.dim
        w_gmf, w_mlp = self.predict.weight[0].split([dim, self.predict.weight.shape[1] - dim])
        w_user, w_item = self.mlp_input.weight.split(dim, dim=1)
        gmf_user = self.gmf_user(users) * w_gmf  # (B, D)
        mlp_user = self.mlp_user(users) @ w_user.T + self.mlp_input.bias  # (B, D)
        gmf_item = self.gmf_item(items)  # (C, D) or (B, ..., D)
        mlp_item = self.mlp_item(items) @ w_item.T
        if items.dim() == 1:
            gmf = gmf_user @ gmf_item.T  # (B, C)
            hidden = mlp_user[:, None, :] + mlp_item[None]  # (B, C, D)
        else:
            shape = (users.shape[0],) + (1,) * (items.dim() - 1) + (dim,)
            gmf = (gmf_user.view(shape) * gmf_item).sum(-1)  # (B, ...)
            hidden = mlp_user.view(shape) + mlp_item
        return gmf + self.mlp_tower(hidden) @ w_mlp + self.predict.bias

    def step_scores(
        self, item_seq: torch.Tensor, targets: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._pair_scores(require_users(self, users), targets)

    def candidate_scores(
        self, item_seq: torch.Tensor, candidates: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        users = require_users(self, users)
        # Score in blocks of candidates small enough for the (B, block, D) MLP input to stay
        # in cache: the tower is cheap per pair, so memory traffic sets the pace.
        block = max(1, PAIR_BUDGET // (users.shape[0] * self.config.dim))
        if candidates.shape[-1] <= block:
            return self._pair_scores(users, candidates)
        return torch.cat(
            [
                self._pair_scores(users, candidates[..., first : first + block])
                for first in range(0, candidates.shape[-1], block)
            ],
            dim=1,
        )
