"""Training negatives (rule 15, CASES.md B07) and training batches (rule 8, B13, B16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrif.batches import TrainingSequences, left_pad, trim_padding
from mrif.sampling import NegativeSampler


def test_b07_training_negatives_avoid_the_whole_history() -> None:
    """Catalogue 1..6, history 1..5: every one of 1000 draws must be item 6."""
    sampler = NegativeSampler([np.array([1, 2, 3, 4, 5])], n_items=6)
    draws = sampler.sample(torch.tensor([0]), 1000, torch.Generator().manual_seed(0))
    assert draws.shape == (1, 1000)
    assert set(draws.flatten().tolist()) == {6}


def test_negatives_match_a_plain_rejection_reference() -> None:
    """Seeded random histories: no draw is ever seen, and draws cover the unseen pool."""
    rng = np.random.default_rng(0)
    histories = [rng.choice(np.arange(1, 31), size=rng.integers(1, 25), replace=False)
                 for _ in range(20)]  # fmt: skip
    sampler = NegativeSampler(histories, n_items=30)
    users = torch.arange(20)
    draws = sampler.sample(users, 400, torch.Generator().manual_seed(1)).numpy()
    for user, row in enumerate(draws):
        unseen = set(range(1, 31)) - set(histories[user].tolist())
        assert set(row.tolist()) == unseen


def test_negatives_are_reproducible_for_a_seed() -> None:
    sampler = NegativeSampler([np.array([1, 2]), np.array([3])], n_items=50)
    first = sampler.sample(torch.tensor([0, 1]), 30, torch.Generator().manual_seed(7))
    again = sampler.sample(torch.tensor([0, 1]), 30, torch.Generator().manual_seed(7))
    other = sampler.sample(torch.tensor([0, 1]), 30, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_user_who_saw_everything_is_a_clear_error() -> None:
    sampler = NegativeSampler([np.array([1, 2, 3])], n_items=3)
    with pytest.raises(ValueError, match="user 0 has interacted with all 3 items"):
        sampler.sample(torch.tensor([0]), 1, torch.Generator().manual_seed(0))


def test_left_pad_keeps_newest_items() -> None:
    assert left_pad([np.array([1, 2, 3, 4, 5])], 3).tolist() == [[3, 4, 5]]
    assert left_pad([np.array([7])], 3).tolist() == [[0, 0, 7]]


def test_trim_padding_drops_only_shared_padding() -> None:
    batch = np.array([[0, 0, 1, 2], [0, 3, 4, 5]])
    assert trim_padding(batch).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_b13_training_pairs_come_from_training_items_only() -> None:
    """Training sequences A:[1,2], B:[1,2], C:[2,1] give exactly 3 pairs: 1->2, 1->2, 2->1."""
    sequences = [np.array([1, 2]), np.array([1, 2]), np.array([2, 1])]
    examples = TrainingSequences(sequences, max_len=50)
    pairs = []
    for batch in examples.batches(2, np.random.default_rng(0)):
        for inputs, positives in zip(batch.inputs, batch.positives, strict=True):
            pairs += [(int(i), int(p)) for i, p in zip(inputs, positives, strict=True) if i]
    assert sorted(pairs) == [(1, 2), (1, 2), (2, 1)]
    assert examples.n_examples == 3


def test_b16_short_training_sequences_give_no_empty_history_pair() -> None:
    """Training items [a] give no pair; [a, b] give exactly ([a] -> b)."""
    examples = TrainingSequences([np.array([4]), np.array([4, 9])], max_len=4)
    batches = list(examples.batches(8, np.random.default_rng(0)))
    assert len(batches) == 1
    assert batches[0].users.tolist() == [1]
    assert batches[0].inputs.tolist() == [[4]] and batches[0].positives.tolist() == [[9]]


def test_every_step_appears_once_per_epoch() -> None:
    """Bucketing by length must neither drop nor repeat examples (rule 8 truncation aside)."""
    rng = np.random.default_rng(3)
    sequences = [rng.integers(1, 100, size=rng.integers(0, 15)) for _ in range(300)]
    examples = TrainingSequences(sequences, max_len=6)
    seen = []
    for batch in examples.batches(16, np.random.default_rng(4)):
        for user, inputs, positives in zip(batch.users, batch.inputs, batch.positives, strict=True):
            seen += [
                (int(user), int(i), int(p)) for i, p in zip(inputs, positives, strict=True) if i
            ]
    expected = []
    for user, seq in enumerate(sequences):
        window = seq[-7:]
        expected += [(user, int(window[t]), int(window[t + 1])) for t in range(len(window) - 1)]
    assert sorted(seen) == sorted(expected)
