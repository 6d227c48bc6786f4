"""Model registry: names accepted by ``mrif train --model``."""

from __future__ import annotations

from collections.abc import Callable

from mrif.config import ModelConfig
from mrif.models.base import SequentialRecommender
from mrif.models.mrif import MRIF
from mrif.models.sasrec import SASRec

# TODO(#3): the paper's other baselines (POP, BPR, NCF, DIN, GRU4Rec, LSTM4Rec, Caser).
MODEL_BUILDERS: dict[str, Callable[[int, ModelConfig], SequentialRecommender]] = {
    "sasrec": SASRec,
    "mrif-avg": lambda n_items, config: MRIF(n_items, config, "mean"),
    "mrif-max": lambda n_items, config: MRIF(n_items, config, "max"),
    "mrif-attn": lambda n_items, config: MRIF(n_items, config, "attn"),
}
MODEL_NAMES = tuple(MODEL_BUILDERS)


def build_model(name: str, n_items: int, config: ModelConfig) -> SequentialRecommender:
    """Instantiate a registered model for a catalogue of ``n_items`` items."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}; got {name!r}")
    return MODEL_BUILDERS[name](n_items, config)


__all__ = ["MODEL_NAMES", "MRIF", "SASRec", "SequentialRecommender", "build_model"]
