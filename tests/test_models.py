"""Contract suite every sequential model passes (STYLE.md item 9), plus CASES B09, B10, B16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mrif.config import ModelConfig
from mrif.models import MODEL_NAMES, MRIF, build_model
from mrif.models.layers import causal_attention_mask

N_ITEMS = 40
CONFIG = ModelConfig(dim=16, n_heads=2, dropout=0.0, max_len=12)


def make_model(name: str, seed: int = 0, config: ModelConfig = CONFIG) -> torch.nn.Module:
    """A model with every parameter randomised, as after training.

    Layer-norm gains start at one, which gives every extractor output the same norm and turns
    the max aggregator's choice into float noise; random gains make the choice meaningful.
    """
    torch.manual_seed(seed)
    model = build_model(name, N_ITEMS, config)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "norm" in parameter_name or "offset_scores" in parameter_name:
                parameter.normal_()
        model.encoder.item_embedding.weight[0].zero_()
        model.encoder.position_embedding.weight[0].zero_()
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


@pytest.fixture(params=MODEL_NAMES)
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return make_model(request.param)


def test_output_shapes(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    seq = random_history(3, 7, gen)
    assert model.step_scores(seq, torch.randint(1, N_ITEMS + 1, (3, 7))).shape == (3, 7)
    assert model.candidate_scores(seq, torch.randint(1, N_ITEMS + 1, (3, 5))).shape == (3, 5)
    assert model.candidate_scores(seq, torch.arange(1, N_ITEMS + 1)).shape == (3, N_ITEMS)


def test_shared_and_per_user_candidates_agree(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(2)
    seq = random_history(4, 9, gen)
    items = torch.arange(1, N_ITEMS + 1)
    shared = model.candidate_scores(seq, items)
    per_user = model.candidate_scores(seq, items.expand(4, -1))
    torch.testing.assert_close(shared, per_user, atol=1e-5, rtol=1e-5)


def test_left_padding_changes_nothing(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(3)
    seq = random_history(4, 6, gen)
    padded = F.pad(seq, (5, 0))
    candidates = torch.randint(1, N_ITEMS + 1, (4, 8), generator=gen)
    torch.testing.assert_close(
        model.candidate_scores(seq, candidates), model.candidate_scores(padded, candidates),
        atol=1e-5, rtol=1e-5,
    )  # fmt: skip


def test_one_pass_equals_scoring_each_prefix(model: torch.nn.Module) -> None:
    """Rule 22: training scores every step at once; each must equal its prefix scored alone."""
    gen = torch.Generator().manual_seed(4)
    seq = random_history(3, 10, gen)
    targets = torch.randint(1, N_ITEMS + 1, (3, 10), generator=gen)
    one_pass = model.step_scores(seq, targets)
    for row in range(3):
        for step in range(10):
            if seq[row, step] == 0:
                continue
            alone = model.candidate_scores(
                seq[row : row + 1, : step + 1], targets[row, step : step + 1][None]
            )
            torch.testing.assert_close(one_pass[row, step], alone[0, 0], atol=1e-5, rtol=1e-5)


def test_b09_no_leakage_from_later_items(model: torch.nn.Module) -> None:
    """Scores at steps < t are identical when the items at steps >= t change."""
    gen = torch.Generator().manual_seed(5)
    seq = torch.randint(1, N_ITEMS + 1, (2, 10), generator=gen)
    targets = torch.randint(1, N_ITEMS + 1, (2, 10), generator=gen)
    changed = seq.clone()
    changed[:, 6:] = torch.randint(1, N_ITEMS + 1, (2, 4), generator=gen)
    before = model.step_scores(seq, targets)[:, :6]
    after = model.step_scores(changed, targets)[:, :6]
    torch.testing.assert_close(before, after, atol=1e-6, rtol=0)
    assert not torch.allclose(model.step_scores(seq, targets), model.step_scores(changed, targets))


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
    scores = model.candidate_scores(seq, torch.arange(1, N_ITEMS + 1))
    assert not torch.allclose(scores[0], scores[1])
    alone = model.candidate_scores(torch.tensor([[1, 2]]), torch.arange(1, N_ITEMS + 1))
    torch.testing.assert_close(scores[0], alone[0], atol=1e-5, rtol=1e-5)


def test_b16_all_padding_row_adds_nothing_to_the_loss(model: torch.nn.Module) -> None:
    inputs = torch.tensor([[0, 0, 7, 8], [0, 0, 0, 0]])
    positives = torch.tensor([[0, 7, 8, 9], [0, 0, 0, 0]])
    negatives = torch.tensor([[3, 3, 3, 3], [5, 5, 5, 5]])
    both = model.loss(inputs, positives, negatives)
    alone = model.loss(inputs[:1], positives[:1], negatives[:1])
    assert torch.isfinite(both)
    torch.testing.assert_close(both, alone)


def test_gradients_reach_every_parameter(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(6)
    model.train()
    seq = random_history(6, 8, gen)
    positives = torch.randint(1, N_ITEMS + 1, (6, 8), generator=gen)
    negatives = torch.randint(1, N_ITEMS + 1, (6, 8), generator=gen)
    model.loss(seq, positives, negatives).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_a_few_steps_lower_the_loss(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(7)
    seq = random_history(16, 8, gen)
    positives = torch.randint(1, N_ITEMS + 1, (16, 8), generator=gen)
    negatives = torch.randint(1, N_ITEMS + 1, (16, 8), generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    first = model.loss(seq, positives, negatives).item()
    for _ in range(10):
        optimizer.zero_grad()
        model.loss(seq, positives, negatives).backward()
        optimizer.step()
    assert model.loss(seq, positives, negatives).item() < first


def test_save_and_load_give_identical_scores(model: torch.nn.Module, tmp_path) -> None:
    gen = torch.Generator().manual_seed(8)
    seq = random_history(4, 8, gen)
    items = torch.arange(1, N_ITEMS + 1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.st")
    fresh = build_model(model.name, N_ITEMS, CONFIG).eval()
    fresh.load_state_dict(load_file(tmp_path / "w.st"))
    assert torch.equal(model.candidate_scores(seq, items), fresh.candidate_scores(seq, items))


def test_padding_embedding_stays_zero_after_training(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(9)
    seq = random_history(8, 6, gen)
    positives = torch.randint(1, N_ITEMS + 1, (8, 6), generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(seq, positives, positives.flip(1)).backward()
        optimizer.step()
    assert model.encoder.item_embedding.weight[0].abs().sum() == 0


def test_several_targets_per_step_match_one_at_a_time(model: torch.nn.Module) -> None:
    """The loss scores positives and negatives in one pass; each must equal its own call."""
    gen = torch.Generator().manual_seed(10)
    seq = random_history(3, 7, gen)
    targets = torch.randint(1, N_ITEMS + 1, (3, 7, 4), generator=gen)
    together = model.step_scores(seq, targets)
    assert together.shape == (3, 7, 4)
    for k in range(4):
        alone = model.step_scores(seq, targets[..., k])
        torch.testing.assert_close(together[..., k], alone, atol=1e-5, rtol=1e-5)
