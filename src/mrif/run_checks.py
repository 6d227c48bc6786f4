"""Checks made before a run starts, so that a run that cannot succeed fails in seconds."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from mrif.config import RunConfig, recorded_setting
from mrif.data.dataset import PreparedDataset
from mrif.run_dir import RunError, read_record, recorded_format_version

ENCODER_FIELDS = (
    "dim",
    "n_heads",
    "n_layers",
    "max_len",
    "ffn_mult",
    "activation",
    "norm",
    "embedding_norm",
    "positions",
    "distance_bias",
)
"""Model fields that shape the transformer encoder MRIF takes from a SASRec run."""


def check_pretrained_run(path: Path, dataset: PreparedDataset, config: RunConfig) -> None:
    """A SASRec run used as MRIF's extractor must match the dataset and the encoder shape."""
    record_path = path / "config.json"
    if not path.is_dir() or not record_path.exists():
        return  # a bare weights file: only its tensor shapes can be checked, at load time
    record = read_record(record_path)
    if record.get("model") != "sasrec":
        raise RunError(f"--pretrained {path} is a {record.get('model')} run; give a SASRec run")
    theirs = record.get("dataset", {}).get("path")
    if theirs != str(Path(dataset.path).resolve()):
        raise RunError(f"--pretrained {path} was trained on {theirs}, not on {dataset.path}")
    their_version = recorded_format_version(record)
    if their_version != dataset.meta.get("format_version"):
        raise RunError(
            f"--pretrained {path} was trained on format_version {their_version} of "
            f"{dataset.path}, which has been prepared again since; train that run again"
        )
    ours, theirs_config = config.model, record.get("config", {})
    for key in ENCODER_FIELDS:
        theirs_value = recorded_setting(theirs_config, "model", key)
        if theirs_value != getattr(ours, key):
            raise RunError(
                f"--pretrained {path} has {key}={theirs_value}; this run needs "
                f"{key}={getattr(ours, key)}"
            )
    for key in ("seed", "valid_every"):
        theirs_value = recorded_setting(theirs_config, "train", key)
        if theirs_value != getattr(config.train, key):
            warnings.warn(
                f"--pretrained {path} used {key} {theirs_value}, this run uses {key} "
                f"{getattr(config.train, key)}; the run will not match one pre-trained inline",
                stacklevel=2,
            )


def check_data_seed(dataset: PreparedDataset, data_seed: int | None) -> None:
    theirs = dataset.meta.get("sampling_seed")
    if data_seed is not None and theirs != data_seed:
        raise RunError(
            f"{dataset.path} was prepared with sampling seed {theirs}; --data-seed {data_seed} "
            "needs a dataset prepared with that seed (mrif data prepare --seed)"
        )


def check_trainable(dataset: PreparedDataset) -> None:
    """Fail before training on data that cannot give a meaningful run."""
    if len(dataset.eval_users) == 0:
        raise RunError(
            f"{dataset.path}: no user has the 3 interactions leave-one-out needs; nothing to "
            "validate or test"
        )
    if not (dataset.train_lengths >= 2).any():
        raise RunError(
            f"{dataset.path}: no user has 2 training items (after holding out validation and "
            "test), so there is no next-item example to train on"
        )
    if not (dataset.n_negatives > 0).any():
        raise RunError(f"{dataset.path}: no evaluated user has an evaluation negative")
    full = [
        u for u in range(dataset.n_users) if len(np.unique(dataset.history(u))) >= dataset.n_items
    ]
    if full:
        raise RunError(
            f"{dataset.path}: user {dataset.raw_users[full[0]]!r} (and {len(full) - 1} more) "
            "interacted with every item, so no training negative can be drawn; drop such users"
        )


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise RunError("device is 'cuda' but torch sees no CUDA device; pass --device cpu")
