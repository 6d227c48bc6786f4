"""DIN: deep interest network, target attention over the history (Zhou et al., KDD 2018)."""

from __future__ import annotations

import torch
from torch import nn

from mrif import PAD_ID
from mrif.config import ModelConfig
from mrif.models.base import SequentialRecommender
from mrif.models.layers import Dropout, init_weights

ATTENTION_WIDTH = 8
"""Hidden width of the activation unit that weighs each history item against the target. The
unit runs once per (user, candidate, history item): its width sets the cost of evaluation,
which for DIN outweighs training (100 candidates per user against 2 targets per step)."""
TOWER_WIDTHS = (32, 16)
"""Hidden widths of the scoring MLP (the paper's 200-80 served far wider inputs; this MLP
runs once per user and candidate, so its width sets the cost of full ranking)."""
PAIR_BUDGET = 2**20
"""Largest (history item x candidate x attention unit) block held at once while scoring."""


class DIN(SequentialRecommender):
    """Scores a target by pooling the history with weights that depend on the target.

    The activation unit sees ``[h_j, e, h_j * e, h_j - e]`` for history item ``h_j`` and target
    ``e`` and outputs an unnormalised weight (no softmax, as in the paper, so the pooled vector
    keeps a sense of how much of the history is relevant). The pooled interest ``v``, the
    target and their product go through an MLP to one logit. At step t only items 1..t are
    pooled, so one pass scores every step (rule 22).

    Args:
        n_items: number of real items (ids 1..n_items).
        config: ``dim`` is the embedding width; ``dropout`` applies to the scoring MLP.

    Note:
        Departures from the paper: item ids are the only feature (no categories or user
        profile), PReLU replaces Dice, and the loss is the shared binary cross-entropy with one
        sampled negative per step.
    """

    name = "din"

    def __init__(self, n_items: int, config: ModelConfig) -> None:
        super().__init__()
        dim = config.dim
        self.n_items = n_items
        self.config = config
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=PAD_ID)
        self.unit_input = nn.Linear(4 * dim, ATTENTION_WIDTH)
        self.unit_activation = nn.PReLU()
        self.unit_output = nn.Linear(ATTENTION_WIDTH, 1)
        layers: list[nn.Module] = []
        width = 3 * dim
        for hidden in TOWER_WIDTHS:
            layers += [nn.Linear(width, hidden), nn.PReLU(), Dropout(config.dropout)]
            width = hidden
        self.tower = nn.Sequential(*layers, nn.Linear(width, 1))
        self.apply(init_weights)
        with torch.no_grad():
            self.item_embedding.weight[PAD_ID].zero_()

    def _attention_keys(self, history: torch.Tensor) -> torch.Tensor:
        """Per history item and unit k, the key ``[h * w_k; onehot(k); per_item_k(h)]``.

        The unit's first layer over ``[h, e, h * e, h - e]`` splits into a part per history
        item, a part per target and a bilinear part. Against the query
        ``[e; per_target(e); 1]`` (see ``_attention_weights``) one batched product gives all
        three for every (target, history item, unit) at once.

        Args:
            history: (B, J, D) history embeddings.

        Returns:
            (B, J * A, D + A + 1) keys.
        """
        w_h, _, w_he, w_diff = self.unit_input.weight.split(self.config.dim, dim=1)
        per_item = history @ (w_h + w_diff).T  # (B, J, A)
        batch, n_hist, _ = history.shape
        units = torch.eye(ATTENTION_WIDTH, dtype=history.dtype, device=history.device)
        keys = torch.cat(
            [
                history[:, :, None, :] * w_he,  # (B, J, A, D)
                units.expand(batch, n_hist, -1, -1),  # (B, J, A, A)
                per_item[..., None],  # (B, J, A, 1)
            ],
            dim=-1,
        )
        return keys.flatten(1, 2)

    def _attention_weights(
        self, keys: torch.Tensor, targets: torch.Tensor, weight_mask: torch.Tensor
    ) -> torch.Tensor:
        """The activation unit's weight of every history item for every target.

        Args:
            keys: (B, J * A, D + A + 1) from ``_attention_keys(history)``.
            targets: (B, Q, D) target embeddings per user (Q = steps x targets per step), or
                (Q, D) targets shared by every user, whose query is then built once.
            weight_mask: (B, Q, J) True where target q may look at history item j.

        Returns:
            (B, Q, J) unnormalised weights, zero where masked.
        """
        _, w_e, _, w_diff = self.unit_input.weight.split(self.config.dim, dim=1)
        per_target = targets @ (w_e - w_diff).T + self.unit_input.bias  # (..., Q, A)
        queries = torch.cat([targets, per_target, torch.ones_like(targets[..., :1])], dim=-1)
        pairs = torch.matmul(queries, keys.transpose(1, 2))  # (B, Q, J*A)
        pairs = pairs.view(keys.shape[0], pairs.shape[1], -1, ATTENTION_WIDTH)
        hidden = self.unit_activation(pairs)  # (B, Q, J, A)
        return self.unit_output(hidden).squeeze(-1) * weight_mask  # (B, Q, J)

    def _tower(self) -> tuple[nn.Linear, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The scoring MLP's first layer and its weights on ``v``, ``e`` and ``v * e``."""
        first = self.tower[0]
        assert isinstance(first, nn.Linear)
        w_v, w_e, w_ve = first.weight.split(self.config.dim, dim=1)
        return first, w_v, w_e, w_ve

    def _projected_history(self, history: torch.Tensor) -> torch.Tensor:
        """(B, J, D) history -> (B, J, H): each item through the ``v`` part of the MLP's first
        layer, so that ``weights @ projected`` is that part of the pooled interest."""
        return history @ self._tower()[1].T

    def _score(
        self,
        weights: torch.Tensor,
        history: torch.Tensor,
        projected: torch.Tensor,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        """The scoring MLP over ``[v, e, v * e]`` for the pooled interest ``v = weights @ h``.

        The MLP's first layer is applied part by part, so the concatenation is never built:
        its ``v`` part is ``weights @ projected``, the J history items projected once instead
        of the Q pooled vectors, and the ``e`` part of targets shared by every user is
        computed once.

        Args:
            weights: (B, Q, J) from ``_attention_weights``.
            history: (B, J, D) history embeddings.
            projected: (B, J, H) from ``_projected_history(history)``.
            targets: (B, Q, D) per user or (Q, D) shared.

        Returns:
            (B, Q) logits.
        """
        first, _, w_e, w_ve = self._tower()
        interest = torch.bmm(weights, history)  # (B, Q, D)
        hidden = torch.bmm(weights, projected)  # (B, Q, H)
        hidden = hidden + (interest * targets) @ w_ve.T + (targets @ w_e.T + first.bias)
        return self.tower[1:](hidden).squeeze(-1)

    def step_scores(
        self, item_seq: torch.Tensor, targets: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        one_target = targets.dim() == 2
        if one_target:
            targets = targets.unsqueeze(-1)
        batch, seq_len, n_targets = targets.shape
        history = self.item_embedding(item_seq)  # (B, L, D)
        target_emb = self.item_embedding(targets).view(batch, seq_len * n_targets, -1)
        steps = torch.arange(seq_len, device=item_seq.device)
        sees = (steps[None, :] <= steps[:, None]) & (item_seq != PAD_ID)[:, None, :]  # (B, L, L)
        sees = sees.repeat_interleave(n_targets, dim=1)  # (B, L*T, L)
        weights = self._attention_weights(self._attention_keys(history), target_emb, sees)
        projected = self._projected_history(history)
        scores = self._score(weights, history, projected, target_emb)
        scores = scores.view(batch, seq_len, n_targets)
        return scores.squeeze(-1) if one_target else scores

    def candidate_scores(
        self, item_seq: torch.Tensor, candidates: torch.Tensor, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, seq_len = item_seq.shape
        history = self.item_embedding(item_seq)  # (B, L, D)
        keys = self._attention_keys(history)
        projected = self._projected_history(history)
        is_item = (item_seq != PAD_ID)[:, None, :]  # (B, 1, L)
        chunk = max(1, PAIR_BUDGET // (batch * seq_len * ATTENTION_WIDTH))
        scores = []
        for first in range(0, candidates.shape[-1], chunk):
            # (B, c, D) per user, or (c, D) shared: every user's query is then built once.
            cand_emb = self.item_embedding(candidates[..., first : first + chunk])
            weights = self._attention_weights(keys, cand_emb, is_item)
            scores.append(self._score(weights, history, projected, cand_emb))
        return torch.cat(scores, dim=1)
