"""Contract suite every sequential model passes (STYLE.md item 9), plus CASES B09, B10, B16."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mrif.config import ModelConfig
from mrif.models import MODEL_NAMES, MRIF, build_model
from mrif.models import mrif as mrif_module
from mrif.models.layers import causal_attention_mask

N_ITEMS = 40
N_USERS = 20
CONFIG = ModelConfig(dim=16, n_heads=2, dropout=0.0, max_len=12)
HISTORY_FREE = ("pop", "bpr", "ncf")
"""Models whose scores ignore the history (POP counts, BPR and NCF factorise user x item)."""
TRAINABLE = tuple(name for name in MODEL_NAMES if name != "pop")
PRE_NORM = dataclasses.replace(CONFIG, norm="pre", embedding_norm=True)
"""Encoder options other than the paper's: pre-norm layers with an embedding LayerNorm, and a
learned attention bias per key-to-query distance."""
DISTANCE_BIAS = dataclasses.replace(CONFIG, distance_bias=True)
ENCODER_VARIANTS = [
    ("sasrec", PRE_NORM, "pre-norm"),
    ("mrif-attn", PRE_NORM, "pre-norm"),
    ("sasrec", DISTANCE_BIAS, "distance-bias"),
    ("mrif-attn", DISTANCE_BIAS, "distance-bias"),
]


def users_for(batch: int) -> torch.Tensor:
    """Distinct user ids for the rows of a batch."""
    return torch.arange(batch) % N_USERS


def padding_embeddings(model: torch.nn.Module) -> list[torch.nn.Embedding]:
    return [m for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.padding_idx == 0]


def make_model(name: str, seed: int = 0, config: ModelConfig = CONFIG) -> torch.nn.Module:
    """A model with every parameter randomised, as after training.

    Initial weights are small (N(0, 0.02)), so a model with several layers between history and
    score (DIN) barely reacts to the history until trained; N(0, 0.3) makes every path
    visible. Layer-norm gains start at one, which gives every extractor output the same norm
    and turns the max aggregator's choice into float noise; random gains make it meaningful.
    """
    torch.manual_seed(seed)
    model = build_model(name, N_ITEMS, config, N_USERS)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "norm" in parameter_name or "offset_scores" in parameter_name:
                parameter.normal_()
            else:
                parameter.normal_(0.0, 0.3)
        for embedding in padding_embeddings(model):
            embedding.weight[0].zero_()
    if name == "pop":
        model.fit_statistics([torch.randint(1, N_ITEMS + 1, (30,)).numpy()])
    if isinstance(model, MRIF):
        model.extractor_is_pretrained.fill_(True)
    return model.eval()


def random_history(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Left-padded histories with lengths 1..length."""
    seq = torch.randint(1, N_ITEMS + 1, (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    is_pad = torch.arange(length)[None, :] < (length - lengths)[:, None]
    return seq.masked_fill(is_pad, 0)


@pytest.fixture(
    params=[(name, CONFIG, "") for name in MODEL_NAMES] + ENCODER_VARIANTS,
    ids=lambda param: "-".join(filter(None, (param[0], param[2]))),
)
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    name, config, _ = request.param
    return make_model(name, config=config)


@pytest.fixture(
    params=[(name, CONFIG, "") for name in TRAINABLE] + ENCODER_VARIANTS,
    ids=lambda param: "-".join(filter(None, (param[0], param[2]))),
)
def trainable(request: pytest.FixtureRequest) -> torch.nn.Module:
    name, config, _ = request.param
    return make_model(name, config=config)


def test_output_shapes(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    seq = random_history(3, 7, gen)
    users = users_for(3)
    targets = torch.randint(1, N_ITEMS + 1, (3, 7))
    assert model.step_scores(seq, targets, users).shape == (3, 7)
    candidates = torch.randint(1, N_ITEMS + 1, (3, 5))
    assert model.candidate_scores(seq, candidates, users).shape == (3, 5)
    assert model.candidate_scores(seq, torch.arange(1, N_ITEMS + 1), users).shape == (3, N_ITEMS)


def test_shared_and_per_user_candidates_agree(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(2)
    seq = random_history(4, 9, gen)
    items = torch.arange(1, N_ITEMS + 1)
    shared = model.candidate_scores(seq, items, users_for(4))
    per_user = model.candidate_scores(seq, items.expand(4, -1), users_for(4))
    torch.testing.assert_close(shared, per_user, atol=1e-5, rtol=1e-5)


def test_left_padding_changes_nothing(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(3)
    seq = random_history(4, 6, gen)
    padded = F.pad(seq, (5, 0))
    candidates = torch.randint(1, N_ITEMS + 1, (4, 8), generator=gen)
    torch.testing.assert_close(
        model.candidate_scores(seq, candidates, users_for(4)),
        model.candidate_scores(padded, candidates, users_for(4)),
        atol=1e-5, rtol=1e-5,
    )  # fmt: skip


def test_one_pass_equals_scoring_each_prefix(model: torch.nn.Module) -> None:
    """Rule 22: training scores every step at once; each must equal its prefix scored alone."""
    gen = torch.Generator().manual_seed(4)
    seq = random_history(3, 10, gen)
    targets = torch.randint(1, N_ITEMS + 1, (3, 10), generator=gen)
    users = users_for(3)
    one_pass = model.step_scores(seq, targets, users)
    for row in range(3):
        for step in range(10):
            if seq[row, step] == 0:
                continue
            alone = model.candidate_scores(
                seq[row : row + 1, : step + 1],
                targets[row, step : step + 1][None],
                users[row : row + 1],
            )
            torch.testing.assert_close(one_pass[row, step], alone[0, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("n_levels", "window"), [(0, 3), (1, 5), (3, 3), (2, 5)])
@pytest.mark.parametrize("name", ["mrif-avg", "mrif-max", "mrif-attn"])
def test_mrif_one_pass_equals_each_prefix_for_other_windows(
    name: str, n_levels: int, window: int
) -> None:
    """Rule 22 for aggregation depths and windows other than the paper's (2 levels of 3)."""
    config = dataclasses.replace(CONFIG, n_levels=n_levels, window=window)
    test_one_pass_equals_scoring_each_prefix(make_model(name, config=config))


@pytest.mark.parametrize("block", [1, 250, 1 << 19])
@pytest.mark.parametrize("name", ["mrif-avg", "mrif-max", "mrif-attn"])
def test_mrif_shared_candidates_in_blocks_match_per_user(
    name: str, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shared candidates are scored in blocks of at most ``SHARED_LOGITS_BLOCK`` logits: one
    item per block, blocks of 6 items (the last one shorter) and one block for all."""
    monkeypatch.setattr(mrif_module, "SHARED_LOGITS_BLOCK", block)
    model = make_model(name)
    seq = random_history(4, 9, torch.Generator().manual_seed(11))
    items = torch.arange(1, N_ITEMS + 1)
    shared = model.candidate_scores(seq, items)
    per_user = model.candidate_scores(seq, items.expand(4, -1))
    torch.testing.assert_close(shared, per_user, atol=1e-5, rtol=1e-5)


def test_backward_positions_break_rule_22() -> None:
    """``positions="backward"`` (array slots read from the right, for diagnosis only) gives
    a step another score in one pass than alone: the reason it is never the default."""
    model = make_model("sasrec", config=dataclasses.replace(CONFIG, positions="backward"))
    seq = torch.arange(1, 7)[None]
    targets = torch.arange(2, 8)[None]
    one_pass = model.step_scores(seq, targets)
    alone = model.candidate_scores(seq[:, :3], targets[:, 2:3])
    assert not torch.allclose(one_pass[0, 2], alone[0, 0], atol=1e-3)
    # the newest step is the same either way: its slot is 1 both times
    torch.testing.assert_close(one_pass[0, 5], model.candidate_scores(seq, targets[:, 5:6])[0, 0])


def test_b09_no_leakage_from_later_items(model: torch.nn.Module) -> None:
    """Scores at steps < t are identical when the items at steps >= t change."""
    gen = torch.Generator().manual_seed(5)
    seq = torch.randint(1, N_ITEMS + 1, (2, 10), generator=gen)
    targets = torch.randint(1, N_ITEMS + 1, (2, 10), generator=gen)
    changed = seq.clone()
    changed[:, 6:] = torch.randint(1, N_ITEMS + 1, (2, 4), generator=gen)
    users = users_for(2)
    before = model.step_scores(seq, targets, users)
    after = model.step_scores(changed, targets, users)
    torch.testing.assert_close(before[:, :6], after[:, :6], atol=1e-6, rtol=0)
    if model.name not in HISTORY_FREE:  # the later steps do read the changed items
        assert not torch.allclose(before, after)


def test_b09_causal_mask_reference_values() -> None:
    """CASES.md B09: one head, Q = K = V = embeddings, scale 1/sqrt(2)."""
    emb = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    seq = torch.tensor([[1, 2, 3]])
    mask = causal_attention_mask(seq)
    out = F.scaled_dot_product_attention(emb[:, None], emb[:, None], emb[:, None], attn_mask=mask)
    expected = torch.tensor([[1.0, 0.0], [0.3302, 0.6698], [0.7517, 0.7517]])
    torch.testing.assert_close(out[0, 0], expected, atol=1e-4, rtol=0)

    emb[0, 2] = torch.tensor([0.0, 2.0])
    out = F.scaled_dot_product_attention(emb[:, None], emb[:, None], emb[:, None], attn_mask=mask)
    torch.testing.assert_close(out[0, 0, :2], expected[:2], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0, 0, 2], torch.tensor([0.0454, 1.7225]), atol=1e-4, rtol=0)


def test_b10_user_state_read_at_newest_item(model: torch.nn.Module) -> None:
    """Left padding: a = [0, 0, 1, 2], b = [0, 3, 4, 5]; scores must depend on the user."""
    seq = torch.tensor([[0, 0, 1, 2], [0, 3, 4, 5]])
    users = users_for(2)
    scores = model.candidate_scores(seq, torch.arange(1, N_ITEMS + 1), users)
    if model.name != "pop":  # POP ranks every user alike by design
        assert not torch.allclose(scores[0], scores[1])
    alone = model.candidate_scores(torch.tensor([[1, 2]]), torch.arange(1, N_ITEMS + 1), users[:1])
    torch.testing.assert_close(scores[0], alone[0], atol=1e-5, rtol=1e-5)


def test_b16_all_padding_row_adds_nothing_to_the_loss(model: torch.nn.Module) -> None:
    inputs = torch.tensor([[0, 0, 7, 8], [0, 0, 0, 0]])
    positives = torch.tensor([[0, 7, 8, 9], [0, 0, 0, 0]])
    negatives = torch.tensor([[3, 3, 3, 3], [5, 5, 5, 5]])
    both = model.loss(inputs, positives, negatives, users_for(2))
    alone = model.loss(inputs[:1], positives[:1], negatives[:1], users_for(1))
    assert torch.isfinite(both)
    torch.testing.assert_close(both, alone)


def test_gradients_reach_every_parameter(trainable: torch.nn.Module) -> None:
    model = trainable
    gen = torch.Generator().manual_seed(6)
    model.train()
    seq = random_history(6, 8, gen)
    positives = torch.randint(1, N_ITEMS + 1, (6, 8), generator=gen)
    negatives = torch.randint(1, N_ITEMS + 1, (6, 8), generator=gen)
    model.loss(seq, positives, negatives, users_for(6)).backward()
    assert list(model.parameters())
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_a_few_steps_lower_the_loss(trainable: torch.nn.Module) -> None:
    model = trainable
    gen = torch.Generator().manual_seed(7)
    seq = random_history(16, 8, gen)
    users = users_for(16)
    positives = torch.randint(1, N_ITEMS + 1, (16, 8), generator=gen)
    negatives = torch.randint(1, N_ITEMS + 1, (16, 8), generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    first = model.loss(seq, positives, negatives, users).item()
    for _ in range(10):
        optimizer.zero_grad()
        model.loss(seq, positives, negatives, users).backward()
        optimizer.step()
    assert model.loss(seq, positives, negatives, users).item() < first


def test_save_and_load_give_identical_scores(model: torch.nn.Module, tmp_path) -> None:
    gen = torch.Generator().manual_seed(8)
    seq = random_history(4, 8, gen)
    items = torch.arange(1, N_ITEMS + 1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.st")
    fresh = build_model(model.name, N_ITEMS, model.config, N_USERS).eval()
    fresh.load_state_dict(load_file(tmp_path / "w.st"))
    users = users_for(4)
    assert torch.equal(
        model.candidate_scores(seq, items, users), fresh.candidate_scores(seq, items, users)
    )


def test_padding_embedding_stays_zero_after_training(trainable: torch.nn.Module) -> None:
    model = trainable
    gen = torch.Generator().manual_seed(9)
    seq = random_history(8, 6, gen)
    positives = torch.randint(1, N_ITEMS + 1, (8, 6), generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(seq, positives, positives.flip(1), users_for(8)).backward()
        optimizer.step()
    assert padding_embeddings(model)
    for embedding in padding_embeddings(model):
        assert embedding.weight[0].abs().sum() == 0


def test_several_targets_per_step_match_one_at_a_time(model: torch.nn.Module) -> None:
    """The loss scores positives and negatives in one pass; each must equal its own call."""
    gen = torch.Generator().manual_seed(10)
    seq = random_history(3, 7, gen)
    targets = torch.randint(1, N_ITEMS + 1, (3, 7, 4), generator=gen)
    users = users_for(3)
    together = model.step_scores(seq, targets, users)
    assert together.shape == (3, 7, 4)
    for k in range(4):
        alone = model.step_scores(seq, targets[..., k], users)
        torch.testing.assert_close(together[..., k], alone, atol=1e-5, rtol=1e-5)
