"""Typed, frozen run configuration, read from TOML files and command-line flags.

A run is described by two sections: ``[model]`` (architecture) and ``[train]`` (optimisation
and selection). Unknown keys fail and list the valid ones; every value is checked when the
config is built, and the resolved config is written beside every result.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEVICES = ("cpu", "cuda")
ACTIVATIONS = ("relu", "gelu")
NORM_PLACEMENTS = ("post", "pre")
POSITION_SCHEMES = ("forward", "backward")
LOSSES = ("bce", "ce")
SELECTION_METRICS = ("ndcg@10", "hit@10", "ndcg@5", "hit@5", "mrr", "auc", "gauc")


class ConfigError(ValueError):
    """A configuration value or key that cannot be used."""


def _check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be {allowed}; got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture shared by the sequential models (defaults follow the MRIF paper).

    Args:
        dim: embedding and hidden width D.
        n_heads: attention heads; must divide ``dim``. The paper does not say; 2 scored
            higher than 1 on Beauty's validation target (ndcg@10 0.3407 against 0.3343 for
            SASRec, seed 0), so 2 is the default.
        n_layers: transformer layers (paper: 2).
        dropout: dropout on embeddings, attention weights and feed-forward outputs.
        max_len: longest history fed to the model; older items are dropped (rule 8).
        n_levels: stacked aggregation levels in MRIF (paper: 2).
        window: aggregation window size ``2w + 1`` (paper: 3).
        ffn_mult: inner width of the transformer feed-forward network, as a multiple of
            ``dim`` (the paper does not say; 1 keeps eq. 6 at width D).
        activation: feed-forward non-linearity, ``relu`` (paper) or ``gelu``.
        norm: where each transformer layer normalises: ``post`` (MRIF paper eq. 5-6, after
            each residual sum) or ``pre`` (SASRec paper: ``x + Dropout(f(LN(x)))``, with a
            final LayerNorm on the output).
        embedding_norm: LayerNorm on the summed item and position embeddings before dropout
            (BERT-style; neither paper has it).
        positions: how position ids count: ``forward`` from the oldest item (rule 22 holds),
            or ``backward`` from the newest item of the whole input row, as array slots of a
            left-padded batch do in public SASRec code. ``backward`` lets each training step
            see how many items follow it, so one training pass no longer equals scoring each
            prefix (it breaks rule 22); it exists to measure that effect, never for results.
        distance_bias: add a learned per-head, per-layer bias to each attention logit,
            indexed by how many steps the key lies before the query (Shaw et al. 2018 and
            Raffel et al. 2020 use such relative terms; neither paper here has it). It
            depends on the distance only, so rule 22 holds.
    """

    dim: int = 64
    n_heads: int = 2
    n_layers: int = 2
    dropout: float = 0.5
    max_len: int = 50
    n_levels: int = 2
    window: int = 3
    ffn_mult: int = 1
    activation: str = "relu"
    norm: str = "post"
    embedding_norm: bool = False
    positions: str = "forward"
    distance_bias: bool = False

    def __post_init__(self) -> None:
        _check_range("dim", self.dim, 1)
        _check_range("n_heads", self.n_heads, 1)
        if self.dim % self.n_heads:
            raise ConfigError(f"n_heads must divide dim={self.dim}; got n_heads={self.n_heads}")
        _check_range("n_layers", self.n_layers, 1)
        _check_range("dropout", self.dropout, 0.0, 0.99)
        _check_range("max_len", self.max_len, 2)
        _check_range("n_levels", self.n_levels, 0)
        if self.window < 1 or self.window % 2 == 0:
            raise ConfigError(f"window must be a positive odd number; got {self.window}")

        _check_range("ffn_mult", self.ffn_mult, 1)
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}; got {self.activation!r}")
        if self.norm not in NORM_PLACEMENTS:
            raise ConfigError(f"norm must be one of {NORM_PLACEMENTS}; got {self.norm!r}")
        if self.positions not in POSITION_SCHEMES:
            raise ConfigError(
                f"positions must be one of {POSITION_SCHEMES}; got {self.positions!r}"
            )

    @property
    def half_window(self) -> int:
        """``w`` in the paper's window ``2w + 1``."""
        return self.window // 2


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, early stopping and run settings.

    Args:
        lr: Adam learning rate of the main stage; None uses the model's ``default_lr`` (SASRec
            2e-3; MRIF 1e-3, since it starts from a pre-trained extractor).
        weight_decay: L2 penalty passed to Adam.
        batch_size: users per training batch.
        epochs: most epochs of the main stage.
        patience: epochs without a better validation metric before stopping.
        valid_every: validate (and so select and stop) every ``valid_every`` epochs and after
            the last; the best validated epoch is selected and ``patience`` still counts
            epochs. The default 2 halves the cost of validation, a quarter of a Beauty run's
            time at 1. 1 validates after every epoch.
        pretrain_epochs: most epochs of MRIF's extractor pre-training (SASRec objective). With
            the pre-training defaults equal to SASRec's, the pre-training is exactly the default
            SASRec run of the same seed.
        pretrain_lr: Adam learning rate of the pre-training.
        pretrain_patience: patience of the pre-training stage.
        loss: training loss: ``bce`` with one sampled negative per positive (rule 23, the
            paper's), or ``ce``, softmax cross-entropy over the whole catalogue at every step
            (SASRec, GRU4Rec and LSTM4Rec only; an option, never the reproduction default).
        select_metric: sampled validation metric used for model selection (rule 16).
        eval_batch_size: users per evaluation batch.
        item_chunk: items scored at once under the full-ranking protocol.
        seed: fixes data order, initialisation, negatives and dropout (rule 17).
        device: ``cpu`` or ``cuda``.
        threads: CPU threads for torch; 0 keeps torch's default.
    """

    lr: float | None = None
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 100
    patience: int = 10
    valid_every: int = 2
    pretrain_epochs: int = 100
    pretrain_lr: float = 2e-3
    pretrain_patience: int = 10
    loss: str = "bce"
    select_metric: str = "ndcg@10"
    eval_batch_size: int = 256
    item_chunk: int = 4096
    seed: int = 0
    device: str = "cpu"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.lr is not None:
            _check_range("lr", self.lr, 1e-12)
        _check_range("pretrain_lr", self.pretrain_lr, 1e-12)
        _check_range("weight_decay", self.weight_decay, 0.0)
        for name in ("batch_size", "eval_batch_size", "item_chunk"):
            _check_range(name, getattr(self, name), 1)
        for name in ("epochs", "threads"):
            _check_range(name, getattr(self, name), 0)
        for name in ("patience", "valid_every", "pretrain_patience", "pretrain_epochs"):
            _check_range(name, getattr(self, name), 1)
        _check_range("seed", self.seed, 0, 2**32 - 1)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("select_metric", self.select_metric, SELECTION_METRICS)
        _check_choice("device", self.device, DEVICES)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run: the model name, its architecture and its training."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        unknown = set(data) - {"model", "train"}
        if unknown:
            raise ConfigError(
                f"{source}: unknown section(s) {sorted(unknown)}; valid sections: model, train"
            )
        model = _build(ModelConfig, data.get("model", {}), f"{source} [model]")
        train = _build(TrainConfig, data.get("train", {}), f"{source} [train]")
        return cls(model=model, train=train)

    def with_overrides(self, model: dict[str, Any], train: dict[str, Any]) -> RunConfig:
        """A copy with the given fields replaced (flags win over the file)."""
        merged = self.to_dict()
        merged["model"].update(model)
        merged["train"].update(train)
        return RunConfig.from_dict(merged, source="flags")


SPEED_ONLY = {("train", "threads"), ("train", "eval_batch_size"), ("train", "item_chunk")}
"""Settings that change how fast a run goes; what it computes stays equal up to floating-point
rounding."""

BEFORE_FIELD_EXISTED: dict[tuple[str, str], Any] = {("train", "valid_every"): 1}
"""How runs recorded before a field existed behaved, where that is not today's default."""


def recorded_setting(recorded: dict[str, Any], section: str, key: str) -> Any:
    """One setting of a run's recorded config (``config.json``'s ``config``). A field missing
    from an older record takes the value that run actually used: ``BEFORE_FIELD_EXISTED``'s,
    else the default."""
    if key in recorded.get(section, {}):
        return recorded[section][key]
    if (section, key) in BEFORE_FIELD_EXISTED:
        return BEFORE_FIELD_EXISTED[section, key]
    return RunConfig().to_dict()[section][key]


def _build(kind: type, values: dict[str, Any], source: str) -> Any:
    valid = {f.name: f for f in fields(kind)}
    unknown = set(values) - set(valid)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {sorted(unknown)}; valid keys: {', '.join(valid)}"
        )
    for key, value in values.items():
        default = getattr(kind(), key)
        if default is None and value is None:
            continue
        expected = float if default is None else type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise ConfigError(
                f"{source}: {key} must be {expected.__name__}; got {type(value).__name__} {value!r}"
            )
    try:
        return kind(**values)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def load_config(path: Path | str | None) -> RunConfig:
    """Read a TOML config with ``[model]`` and ``[train]`` sections; ``None`` gives defaults."""
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return RunConfig.from_dict(data, source=str(path))
