"""The files of a run directory: names, weights, records, and moving a finished run into place.

Writes go to a sibling file or directory first and are renamed into place, so a reader never
sees half a file and a failed run never damages a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mrif import __version__
from mrif.models.base import SequentialRecommender
from mrif.models.mrif import PretrainingMissingError

WEIGHTS = "weights.safetensors"
ID_FILES = ("items.parquet", "users.parquet")
"""The dataset's raw item and user ids, copied into every run (runs older than the user file
hold the item file only)."""
TEST_RANKS = "test_ranks.parquet"
"""Per evaluated user: sampled rank, number of sampled negatives, full-ranking rank."""


class RunError(RuntimeError):
    """A run directory that cannot be written or read."""


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        finished = (out_dir / "metrics.json").exists()
        what = "already holds a finished run" if finished else "exists and is not empty"
        raise RunError(f"--out {out_dir} {what}; choose another --out or pass --overwrite")


def replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing what was there only once ``new`` is complete."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_extractor(path: Path) -> dict[str, torch.Tensor]:
    """The ``SequenceEncoder`` weights of a SASRec run directory or weights file."""
    weights = path / WEIGHTS if path.is_dir() else path
    if not weights.exists():
        raise PretrainingMissingError(
            f"pre-trained extractor not found: {weights} (expected a SASRec run directory or "
            f"its {WEIGHTS})"
        )
    state = load_weights(weights)
    prefix = "encoder."
    encoder = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not encoder:
        raise PretrainingMissingError(f"{weights} holds no encoder weights")
    return encoder


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except Exception as error:  # safetensors raises its own error types
        raise RunError(f"{path}: not a readable safetensors weights file ({error})") from None


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RunError(f"{path}: cannot read run record ({error})") from None
    for key in ("model", "dataset", "config"):
        if key not in record:
            raise RunError(f"{path}: run record lacks '{key}'")
    return record


def recorded_format_version(record: dict[str, Any]) -> int:
    """The dataset format a run was trained on; records written before the field existed
    were all format 1."""
    return int(record.get("dataset", {}).get("format_version", 1))


def write_aside(path: Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` by calling ``write`` on a file beside it, then renaming that file into
    place: a failure leaves neither half a file at ``path`` nor the partial file."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def save_weights(model: SequentialRecommender, path: Path) -> None:
    """Write the state dict as safetensors (written aside: never half a file)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"model": model.name, "mrif_version": __version__}
    write_aside(path, lambda partial: save_file(state, str(partial), metadata=metadata))


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_aside(path, lambda partial: partial.write_text(json.dumps(data, indent=2) + "\n"))
