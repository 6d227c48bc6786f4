"""Model registry: names accepted by ``mrif train --model``."""

from __future__ import annotations

from collections.abc import Callable

from mrif.config import ModelConfig
from mrif.models.base import SequentialRecommender
from mrif.models.bpr import BPR
from mrif.models.caser import Caser
from mrif.models.din import DIN
from mrif.models.mrif import MRIF
from mrif.models.ncf import NCF
from mrif.models.pop import Popularity
from mrif.models.recurrent import RecurrentRecommender
from mrif.models.sasrec import SASRec

ModelBuilder = Callable[[int, int, ModelConfig], SequentialRecommender]
"""Builds a model from ``(n_items, n_users, config)``."""

MODEL_BUILDERS: dict[str, ModelBuilder] = {
    "pop": lambda n_items, n_users, config: Popularity(n_items, config),
    "bpr": BPR,
    "ncf": NCF,
    "din": lambda n_items, n_users, config: DIN(n_items, config),
    "gru4rec": lambda n_items, n_users, config: RecurrentRecommender(n_items, config, "gru"),
    "lstm4rec": lambda n_items, n_users, config: RecurrentRecommender(n_items, config, "lstm"),
    "caser": Caser,
    "sasrec": lambda n_items, n_users, config: SASRec(n_items, config),
    "mrif-avg": lambda n_items, n_users, config: MRIF(n_items, config, "mean"),
    "mrif-max": lambda n_items, n_users, config: MRIF(n_items, config, "max"),
    "mrif-attn": lambda n_items, n_users, config: MRIF(n_items, config, "attn"),
}
MODEL_NAMES = tuple(MODEL_BUILDERS)
"""Every model, in the paper's table order: baselines first, then MRIF's variants."""
MRIF_NAMES = ("mrif-avg", "mrif-max", "mrif-attn")


def build_model(
    name: str, n_items: int, config: ModelConfig, n_users: int = 1
) -> SequentialRecommender:
    """Instantiate a registered model for ``n_items`` items and ``n_users`` users (only the
    per-user models, BPR, NCF and Caser, use the latter)."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}; got {name!r}")
    return MODEL_BUILDERS[name](n_items, n_users, config)


__all__ = [
    "MODEL_NAMES",
    "MRIF",
    "MRIF_NAMES",
    "SASRec",
    "SequentialRecommender",
    "build_model",
]
