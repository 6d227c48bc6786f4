"""The training loop: early stopping, best-epoch selection, NaN handling, determinism."""

from __future__ import annotations

import pytest
import torch

from mrif.config import ModelConfig, TrainConfig
from mrif.evaluation import score_sampled
from mrif.models import build_model
from mrif.training import fit, make_optimizer, seed_everything

MODEL = ModelConfig(dim=8, max_len=8, dropout=0.0)


def test_keeps_the_best_validation_epoch_and_stops_early(tiny_dataset) -> None:
    seed_everything(0)
    model = build_model("sasrec", tiny_dataset.n_items, MODEL)
    result = fit(model, tiny_dataset, TrainConfig(epochs=30, patience=2, valid_every=1, lr=0.05))
    scores = [row["ndcg@10"] for row in result.history]
    assert result.best_epoch == 1 + scores.index(max(scores))
    assert result.epochs_run == min(30, result.best_epoch + 2)
    restored = score_sampled(model, tiny_dataset, "valid").metrics
    assert restored == result.best_valid


@pytest.mark.parametrize(("epochs", "valid_every", "patience"), [(30, 3, 4), (7, 3, 30)])
def test_validates_every_few_epochs_and_after_the_last(
    tiny_dataset, epochs: int, valid_every: int, patience: int
) -> None:
    seed_everything(0)
    model = build_model("sasrec", tiny_dataset.n_items, MODEL)
    config = TrainConfig(epochs=epochs, patience=patience, valid_every=valid_every, lr=0.05)
    result = fit(model, tiny_dataset, config)

    assert [row["epoch"] for row in result.history] == list(range(1, result.epochs_run + 1))
    validated = [row["epoch"] for row in result.history if "ndcg@10" in row]
    expected = [e for e in range(1, result.epochs_run + 1) if e % valid_every == 0]
    if result.epochs_run == epochs and epochs % valid_every:
        expected.append(epochs)  # the last epoch is always validated
    assert validated == expected
    scores = {row["epoch"]: row["ndcg@10"] for row in result.history if "ndcg@10" in row}
    assert result.best_epoch == max(scores, key=lambda e: (scores[e], -e))
    # Stopped at the first validation `patience` epochs after the best, or ran to the end.
    stop = next((e for e in validated if e - result.best_epoch >= patience), epochs)
    assert result.epochs_run == stop
    assert score_sampled(model, tiny_dataset, "valid").metrics == result.best_valid


def test_nan_loss_names_epoch_and_step(tiny_dataset, monkeypatch) -> None:
    model = build_model("sasrec", tiny_dataset.n_items, MODEL)
    monkeypatch.setattr(model, "loss", lambda *args: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(FloatingPointError, match="train: epoch 1, step 1: loss became nan"):
        fit(model, tiny_dataset, TrainConfig(epochs=2))


def test_training_lowers_the_loss_on_a_learnable_pattern(tiny_dataset) -> None:
    seed_everything(0)
    model = build_model("sasrec", tiny_dataset.n_items, MODEL)
    result = fit(model, tiny_dataset, TrainConfig(epochs=8, patience=8, lr=0.01))
    assert result.history[-1]["loss"] < result.history[0]["loss"]


@pytest.mark.parametrize("name", ["bpr", "sasrec"])
def test_fused_adam_makes_the_updates_of_the_plain_loop(name: str) -> None:
    """The fast optimizer against torch's per-parameter Adam on the same gradients."""
    config = ModelConfig(dim=8, max_len=6, dropout=0.0)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(build_model(name, 30, config, 7))
    fast, plain = models
    start = [p.detach().clone() for p in fast.parameters()]
    optimizers = (
        make_optimizer(fast, lr=1e-2, weight_decay=1e-3),
        torch.optim.Adam(plain.parameters(), lr=1e-2, weight_decay=1e-3, foreach=False),
    )
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        seq = torch.randint(0, 31, (4, 6), generator=gen)
        positives = torch.randint(1, 31, (4, 6), generator=gen)
        negatives = torch.randint(1, 31, (4, 6), generator=gen)
        users = torch.arange(4)
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad()
            model.loss(seq, positives, negatives, users).backward()
            optimizer.step()
    for (key, a), b in zip(fast.state_dict().items(), plain.state_dict().values(), strict=True):
        if key.endswith("qkv.bias"):
            # The key bias shifts every logit of a query alike, so its true gradient is zero
            # and Adam scales float noise up to lr-sized steps: compare the q and v thirds.
            a, b = a[torch.arange(a.numel()) // 8 != 1], b[torch.arange(b.numel()) // 8 != 1]
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=lambda m, key=key: f"{key}: {m}")
    assert any(not torch.equal(a, b) for a, b in zip(start, fast.parameters(), strict=True))


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_softmax_loss_is_the_cross_entropy_over_real_items(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 12, ModelConfig(dim=8, max_len=5, dropout=0.0), 3).eval()
    seq = torch.tensor([[0, 0, 3, 7, 2], [4, 1, 9, 9, 5]])
    positives = torch.tensor([[0, 0, 7, 2, 11], [1, 9, 9, 5, 12]])
    expected = []
    for row in range(2):
        for step in range(5):
            if seq[row, step] == 0:
                continue
            candidates = torch.arange(1, 13)  # every real item; padding is never a class
            scores = model.candidate_scores(seq[row : row + 1, : step + 1], candidates)[0]
            target = int(positives[row, step]) - 1
            expected.append(-torch.log_softmax(scores, dim=0)[target])
    torch.testing.assert_close(
        model.softmax_loss(seq, positives), torch.stack(expected).mean(), atol=1e-5, rtol=1e-5
    )


def test_softmax_loss_trains_and_is_refused_where_it_cannot_work(tiny_dataset) -> None:
    config = TrainConfig(epochs=3, patience=3, loss="ce")
    seed_everything(0)
    model = build_model("sasrec", tiny_dataset.n_items, ModelConfig(dim=8, max_len=8))
    result = fit(model, tiny_dataset, config)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    mrif = build_model("mrif-attn", tiny_dataset.n_items, ModelConfig(dim=8, max_len=8))
    with pytest.raises(ValueError, match="loss='ce' needs a model that scores every item"):
        fit(mrif, tiny_dataset, config)
