"""The training loop: early stopping, best-epoch selection, NaN handling, determinism."""

from __future__ import annotations

import pytest
import torch

from mrif.config import ModelConfig, TrainConfig
from mrif.evaluation import score_sampled
from mrif.models import build_model
from mrif.training import fit, seed_everything

MODEL = ModelConfig(dim=8, max_len=8, dropout=0.0)


def test_keeps_the_best_validation_epoch_and_stops_early(tiny_dataset) -> None:
    seed_everything(0)
    model = build_model("sasrec", tiny_dataset.n_items, MODEL)
    result = fit(model, tiny_dataset, TrainConfig(epochs=30, patience=2, lr=0.05))
    scores = [row["ndcg@10"] for row in result.history]
    assert result.best_epoch == 1 + scores.index(max(scores))
    assert result.epochs_run == min(30, result.best_epoch + 2)
    restored = score_sampled(model, tiny_dataset, "valid").metrics
    assert restored == result.best_valid


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
