"""What each baseline computes, checked against plain references of its own paper's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrif.config import ModelConfig
from mrif.models import build_model
from mrif.models import din as din_module
from mrif.models.caser import MARKOV_ORDER

N_ITEMS = 30
N_USERS = 5
CONFIG = ModelConfig(dim=8, n_heads=1, dropout=0.0, max_len=10)


def built(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, N_ITEMS, CONFIG, N_USERS).eval()


def test_pop_ranks_by_training_counts_only() -> None:
    model = built("pop")
    model.fit_statistics([np.array([3, 5, 5]), np.array([5, 7]), np.array([7])])
    scores = model.candidate_scores(torch.tensor([[1, 2]]), torch.tensor([3, 5, 7, 9]))
    assert scores.tolist() == [[1.0, 3.0, 2.0, 0.0]]
    assert model.counts[0] == 0  # padding never counts


def test_bpr_loss_is_the_pairwise_formula() -> None:
    model = built("bpr")
    seq = torch.tensor([[0, 4, 6], [2, 3, 9]])
    positives = torch.tensor([[0, 6, 8], [3, 9, 11]])
    negatives = torch.tensor([[1, 1, 1], [7, 7, 7]])
    users = torch.tensor([1, 3])
    p = model.user_embedding.weight[users]  # (2, D)
    q = model.item_embedding.weight
    expected = []
    for row in range(2):
        for step in range(3):
            if seq[row, step] == 0:
                continue
            diff = p[row] @ q[positives[row, step]] - p[row] @ q[negatives[row, step]]
            expected.append(-F.logsigmoid(diff))
    torch.testing.assert_close(
        model.loss(seq, positives, negatives, users), torch.stack(expected).mean()
    )


def test_ncf_equals_the_explicit_neumf_formula() -> None:
    model = built("ncf")
    users = torch.tensor([0, 4])
    items = torch.tensor([[3, 8], [1, 30]])
    gmf = model.gmf_user(users)[:, None] * model.gmf_item(items)
    concat = torch.cat(
        [model.mlp_user(users)[:, None].expand(-1, 2, -1), model.mlp_item(items)], -1
    )
    mlp = model.mlp_tower(model.mlp_input(concat))
    expected = model.predict(torch.cat([gmf, mlp], -1)).squeeze(-1)
    torch.testing.assert_close(
        model.candidate_scores(torch.zeros(2, 1).long(), items, users), expected
    )


@pytest.mark.parametrize(("name", "cell"), [("gru4rec", torch.nn.GRU), ("lstm4rec", torch.nn.LSTM)])
def test_recurrent_state_is_the_rnn_over_the_unpadded_history(name: str, cell: type) -> None:
    model = built(name)
    history = [4, 9, 2]
    padded = torch.tensor([[0, 0, 0, *history]])
    assert isinstance(model.rnn, cell)
    outputs, _ = model.rnn(model.item_embedding(torch.tensor([history])))
    expected = outputs[0, -1] @ model.item_embedding.weight[1:].T
    scores = model.candidate_scores(padded, torch.arange(1, N_ITEMS + 1))[0]
    torch.testing.assert_close(scores, expected)


def test_caser_reads_only_the_newest_window() -> None:
    model = built("caser")
    users = torch.tensor([2])
    history = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    changed = history.clone()
    changed[0, -MARKOV_ORDER - 1] = 20  # just outside the window
    items = torch.arange(1, N_ITEMS + 1)
    torch.testing.assert_close(
        model.candidate_scores(history, items, users), model.candidate_scores(changed, items, users)
    )
    changed[0, -MARKOV_ORDER] = 20  # inside it
    assert not torch.allclose(
        model.candidate_scores(history, items, users), model.candidate_scores(changed, items, users)
    )


def test_caser_states_match_convolving_each_window_image() -> None:
    """The paper's computation, one L x D image per step, against the sequence-wide one."""
    model = built("caser")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
        model.item_embedding.weight[0].zero_()
    history = torch.tensor([[0, 0, 4, 9, 2, 7, 7, 3], [1, 2, 3, 4, 5, 6, 7, 8]])
    users = torch.tensor([1, 4])
    states = model._states(history, users)

    embedded = model.item_embedding(F.pad(history, (MARKOV_ORDER - 1, 0)))
    for row in range(2):
        for step in range(history.shape[1]):
            image = embedded[row, step : step + MARKOV_ORDER][None, None]  # (1, 1, L, D)
            vertical = model.vertical(image).flatten()
            horizontal = [F.relu(conv(image))[0, :, :, 0].amax(dim=1) for conv in model.horizontal]
            z = F.relu(model.dense(torch.cat([vertical, *horizontal])))
            expected = torch.cat([z, model.user_embedding.weight[users[row]]])
            torch.testing.assert_close(states[row, step], expected, atol=1e-5, rtol=1e-5)


def test_din_weights_are_unnormalised_and_pooling_matches_a_loop() -> None:
    model = built("din")
    history = torch.tensor([[0, 3, 7, 12]])
    candidates = torch.tensor([[5, 9]])
    emb = model.item_embedding.weight
    expected = []
    for item in candidates[0]:
        e = emb[item]
        pooled = torch.zeros_like(e)
        for j in history[0][history[0] != 0]:
            h = emb[j]
            unit = model.unit_input(torch.cat([h, e, h * e, h - e]))
            pooled = pooled + model.unit_output(model.unit_activation(unit)) * h
        expected.append(model.tower(torch.cat([pooled, e, pooled * e])))
    scores = model.candidate_scores(history, candidates)
    torch.testing.assert_close(scores, torch.cat(expected)[None], atol=1e-6, rtol=1e-5)


def test_din_candidate_chunks_do_not_change_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    model = built("din")
    history = torch.tensor([[0, 3, 7, 12], [1, 2, 3, 4]])
    items = torch.arange(1, N_ITEMS + 1)
    whole = model.candidate_scores(history, items)
    monkeypatch.setattr(din_module, "PAIR_BUDGET", 2 * 4 * din_module.ATTENTION_WIDTH * 3)
    torch.testing.assert_close(model.candidate_scores(history, items), whole)


@pytest.mark.parametrize("name", ["bpr", "ncf", "caser"])
def test_per_user_models_refuse_to_score_without_users(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} learns a vector per user"):
        built(name).candidate_scores(torch.tensor([[1, 2]]), torch.tensor([3]))
