"""Both evaluation protocols against plain per-user references (rules 9-12, CASES.md B20)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrif.config import ModelConfig
from mrif.evaluation import eval_inputs, full_ranks, score_sampled
from mrif.metrics import ranks_sampled
from mrif.models import MRIF, build_model

CONFIG = ModelConfig(dim=8, dropout=0.0, max_len=6)


def trained_like(name: str, n_items: int, n_users: int = 1) -> torch.nn.Module:
    """A model at its initial weights, except random layer-norm gains and biases: with gains
    of one every extractor output has the same norm, and the max aggregator's choice between
    them (so the ranks compared here) would be float noise."""
    torch.manual_seed(0)
    model = build_model(name, n_items, CONFIG, n_users)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "norm" in parameter_name:
                parameter.normal_()
    if isinstance(model, MRIF):
        model.extractor_is_pretrained.fill_(True)
    return model.eval()


def reference_history(dataset, user: int, split: str) -> torch.Tensor:
    extra = 0 if split == "valid" else 1
    items = dataset.history(user)[: int(dataset.train_lengths[user]) + extra][-CONFIG.max_len :]
    return torch.as_tensor(items, dtype=torch.int64)[None]


@pytest.mark.parametrize("name", ["sasrec", "mrif-attn", "caser", "din"])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_sampled_ranks_match_one_user_at_a_time(tiny_dataset, name: str, split: str) -> None:
    model = trained_like(name, tiny_dataset.n_items, tiny_dataset.n_users)
    fast = score_sampled(model, tiny_dataset, split, batch_size=7)
    targets = tiny_dataset.valid_targets if split == "valid" else tiny_dataset.test_targets
    expected = []
    for row, user in enumerate(tiny_dataset.eval_users):
        negatives = tiny_dataset.negatives[row, : tiny_dataset.n_negatives[row]]
        candidates = torch.as_tensor(np.r_[targets[row], negatives], dtype=torch.int64)[None]
        with torch.no_grad():
            scores = model.candidate_scores(
                reference_history(tiny_dataset, int(user), split),
                candidates,
                torch.tensor([int(user)]),
            )
        expected.append(int(ranks_sampled(scores[:, :1].numpy()[:, 0], scores[:, 1:].numpy())[0]))
    assert fast.ranks.tolist() == expected


def dense_full_ranks(model, dataset, split: str) -> list[int]:
    """Rule 10 by hand: score every item, drop padding and history items, keep the target."""
    inputs = eval_inputs(dataset, split, CONFIG.max_len)
    ranks = []
    for user, history, target in zip(inputs.users, inputs.histories, inputs.targets, strict=True):
        history_t = torch.as_tensor(history)[None]
        with torch.no_grad():
            scores = model.candidate_scores(
                history_t, torch.arange(dataset.n_items + 1), torch.tensor([int(user)])
            )[0]
        competing = [
            i
            for i in range(1, dataset.n_items + 1)
            if i not in set(history.tolist()) and i != target
        ]
        ranks.append(1 + int((scores[competing] >= scores[target]).sum()))
    return ranks


@pytest.mark.parametrize("name", ["sasrec", "mrif-max", "bpr", "gru4rec"])
@pytest.mark.parametrize("item_chunk", [1, 7, 50])
def test_b20_chunked_full_ranking_matches_dense_reference(tiny_dataset, name, item_chunk) -> None:
    model = trained_like(name, tiny_dataset.n_items, tiny_dataset.n_users)
    expected = dense_full_ranks(model, tiny_dataset, "test")
    chunked = full_ranks(model, tiny_dataset, "test", batch_size=5, item_chunk=item_chunk)
    assert chunked.tolist() == expected


def test_b20_full_ranking_never_scores_more_than_a_chunk(tiny_dataset) -> None:
    model = trained_like("sasrec", tiny_dataset.n_items)
    widest = []
    original = model.candidate_scores

    def spy(item_seq, candidates, users=None):
        scores = original(item_seq, candidates, users)
        widest.append(scores.numel())
        return scores

    model.candidate_scores = spy
    full_ranks(model, tiny_dataset, "test", batch_size=4, item_chunk=7)
    assert max(widest) <= 4 * 7


def test_target_repeated_in_history_still_competes() -> None:
    """A repeat purchase: the target is in the input history but is ranked, not excluded."""
    from mrif.evaluation import _excluded_in_chunk

    history = torch.tensor([[0, 3, 5]])
    excluded = _excluded_in_chunk(history, torch.tensor([5]), first=1, width=6)
    assert excluded.tolist() == [[False, False, True, False, True, False]]
