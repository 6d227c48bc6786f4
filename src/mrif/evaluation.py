"""Scoring the validation or test target of every evaluated user, under both protocols.

Sampled protocol (rule 9): the target against the user's frozen negatives saved with the
dataset. Full-ranking protocol (rule 10): the target against every item except padding and the
items in the user's input history, scored in item chunks so that at most
``batch x item_chunk`` scores are held at once (CASES.md B20).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mrif import PAD_ID
from mrif.batches import left_pad, trim_padding
from mrif.data.dataset import PreparedDataset
from mrif.distributed import SINGLE_PROCESS, World
from mrif.metrics import SampledResult, sampled_metrics
from mrif.models.base import SequentialRecommender

SPLITS = ("valid", "test")


@dataclass(frozen=True)
class EvalInputs:
    """Left-padded input histories and targets of the evaluated users, in dataset order."""

    users: np.ndarray  # (U,)
    histories: np.ndarray  # (U, max_len)
    targets: np.ndarray  # (U,)


def eval_inputs(dataset: PreparedDataset, split: str, max_len: int) -> EvalInputs:
    """The validation input is the training sequence; the test input adds the validation
    target (rule 6). Histories keep their newest ``max_len`` items (rule 8)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    extra = 0 if split == "valid" else 1
    sequences = [
        dataset.history(int(u))[: int(dataset.train_lengths[u]) + extra] for u in dataset.eval_users
    ]
    targets = dataset.valid_targets if split == "valid" else dataset.test_targets
    histories = left_pad(sequences, max_len)
    return EvalInputs(dataset.eval_users, histories, np.asarray(targets, dtype=np.int64))


def _length_batches(histories: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices grouped by similar history length, so each batch pads little."""
    lengths = (histories != PAD_ID).sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def score_sampled(
    model: SequentialRecommender,
    dataset: PreparedDataset,
    split: str,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    world: World = SINGLE_PROCESS,
) -> SampledResult:
    """Sampled-protocol metrics (rule 9, 11-14) of ``split`` for every evaluated user.

    With a distributed ``world`` each process scores its share of the batches and the scores
    are gathered, so every process returns the same result.
    """
    model.eval()
    inputs = eval_inputs(dataset, split, model.config.max_len)
    candidates = np.concatenate([inputs.targets[:, None], dataset.negatives], axis=1)
    # Zeros where another process scores: the gathering sum then fills every row exactly.
    target_scores = np.zeros(len(inputs.users), dtype=np.float64)
    negative_scores = np.zeros(dataset.negatives.shape, dtype=np.float64)
    batches = _length_batches(inputs.histories, batch_size)
    if world.is_distributed:  # each batch once: no wrap-around
        batches = batches[world.rank :: world.size]
    for rows in batches:
        history = torch.from_numpy(trim_padding(inputs.histories[rows])).to(device)
        users = torch.from_numpy(inputs.users[rows]).to(device)
        scores = model.candidate_scores(
            history, torch.from_numpy(candidates[rows]).to(device), users
        )
        batch_scores = scores.double().cpu().numpy()  # (B, 1 + N)
        target_scores[rows] = batch_scores[:, 0]
        negative_scores[rows] = batch_scores[:, 1:]
    target_scores = world.sum_array(target_scores)
    negative_scores = world.sum_array(negative_scores)
    negative_mask = np.arange(dataset.negatives.shape[1])[None, :] < dataset.n_negatives[:, None]
    return sampled_metrics(target_scores, negative_scores, negative_mask)


@torch.no_grad()
def full_ranks(
    model: SequentialRecommender,
    dataset: PreparedDataset,
    split: str,
    *,
    batch_size: int = 256,
    item_chunk: int = 4096,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Rank of each user's target among all items not in the input history (rule 10, 11).

    ``rank = 1 + #{allowed items other than the target scoring >= the target}``; the target
    itself always competes, even if it also appears in the history.
    """
    model.eval()
    inputs = eval_inputs(dataset, split, model.config.max_len)
    ranks = np.empty(len(inputs.users), dtype=np.int64)
    n_items = dataset.n_items
    for rows in _length_batches(inputs.histories, batch_size):
        history = torch.from_numpy(trim_padding(inputs.histories[rows])).to(device)
        targets = torch.from_numpy(inputs.targets[rows]).to(device)
        users = torch.from_numpy(inputs.users[rows]).to(device)
        target_scores = model.candidate_scores(history, targets[:, None], users)  # (B, 1)
        beaten_by = torch.zeros(len(rows), dtype=torch.int64, device=device)
        for first in range(1, n_items + 1, item_chunk):
            chunk = torch.arange(first, min(first + item_chunk, n_items + 1), device=device)
            scores = model.candidate_scores(history, chunk, users)  # (B, C)
            excluded = _excluded_in_chunk(history, targets, first, len(chunk))
            beaten_by += ((scores >= target_scores) & ~excluded).sum(dim=1)
        ranks[rows] = (1 + beaten_by).cpu().numpy()
    return ranks


def _excluded_in_chunk(
    history: torch.Tensor, targets: torch.Tensor, first: int, width: int
) -> torch.Tensor:
    """(B, width) True for chunk items that do not compete: history items and the target."""
    excluded = torch.zeros(history.shape[0], width + 1, dtype=torch.bool, device=history.device)
    for ids in (history, targets[:, None]):
        column = ids - first
        outside = (column < 0) | (column >= width) | (ids == PAD_ID)
        excluded.scatter_(1, torch.where(outside, width, column), True)
    return excluded[:, :width]
