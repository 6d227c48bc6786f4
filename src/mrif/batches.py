"""Turning prepared histories into left-padded model inputs.

Every step of a training sequence is an example (the item after ``seq[:t + 1]`` is
``seq[t + 1]``), scored in one pass per user. Batches are padded only to their own longest
sequence: positions count from the oldest item (``forward_positions``), so shared left padding
changes no score, and grouping users of similar length cuts the work on short-history data
such as Amazon (mean length about 9) several-fold.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from mrif import PAD_ID

BUCKET_BATCHES = 32
"""Batches shuffled together before sorting by length: keeps batches random yet similar."""


def left_pad(sequences: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Keep the newest ``width`` items of each sequence (rule 8), padding on the left.

    >>> left_pad([np.array([1, 2]), np.array([3, 4, 5, 6])], 3).tolist()
    [[0, 1, 2], [4, 5, 6]]
    """
    out = np.full((len(sequences), width), PAD_ID, dtype=np.int64)
    for row, items in enumerate(sequences):
        kept = items[-width:] if width else items[:0]
        if len(kept):
            out[row, width - len(kept) :] = kept
    return out


def trim_padding(batch: np.ndarray) -> np.ndarray:
    """Drop leading columns that are padding in every row."""
    has_item = (batch != PAD_ID).any(axis=0)
    if not has_item.any():
        return batch[:, -1:]
    return batch[:, int(np.argmax(has_item)) :]


@dataclass(frozen=True)
class TrainingBatch:
    users: np.ndarray  # (B,)
    inputs: np.ndarray  # (B, L) left-padded
    positives: np.ndarray  # (B, L) the next item at each step, PAD where there is no example

    @property
    def cells(self) -> int:
        """Padded steps, batch x length: what the batch costs to train."""
        return int(self.inputs.size)


class TrainingSequences:
    """Next-item examples of every user with at least two training items.

    Args:
        sequences: the training sequence of each user (index = user id).
        max_len: longest input; each user contributes the newest ``max_len`` steps.
    """

    def __init__(self, sequences: Sequence[np.ndarray], max_len: int) -> None:
        users = [u for u, seq in enumerate(sequences) if len(seq) >= 2]
        self.users = np.asarray(users, dtype=np.int64)
        self.windows = left_pad([sequences[u] for u in users], max_len + 1)  # (N, max_len+1)
        self.n_examples = int((self.windows[:, :-1] != PAD_ID).sum())

    def __len__(self) -> int:
        return len(self.users)

    def batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[TrainingBatch]:
        """One epoch of shuffled batches, each holding users of similar length."""
        order = rng.permutation(len(self.users))
        lengths = (self.windows != PAD_ID).sum(axis=1)
        groups: list[np.ndarray] = []
        bucket = batch_size * BUCKET_BATCHES
        for start in range(0, len(order), bucket):
            chunk = order[start : start + bucket]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            groups.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
        for group_index in rng.permutation(len(groups)):
            rows = groups[group_index]
            window = trim_padding(self.windows[rows])
            yield TrainingBatch(self.users[rows], window[:, :-1], window[:, 1:])
