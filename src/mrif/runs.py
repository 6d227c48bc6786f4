"""Run directories: train a model on a prepared dataset, save it, and score it again later.

A run directory holds ``config.json`` (resolved config, model, dataset), ``weights.safetensors``
(selected weights; loads without unpickling code), ``items.parquet`` (the raw item ids, so
recommendations speak raw ids), ``metrics.json``, ``test_ranks.parquet`` (per-user test ranks
for significance tests) and ``train.log``. MRIF runs also keep their pre-trained extractor under
``pretrain/``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from mrif import __version__
from mrif.config import RunConfig, TrainConfig
from mrif.data.dataset import PreparedDataset
from mrif.data.registry import resolve_dataset
from mrif.evaluation import full_ranks, score_sampled
from mrif.metrics import full_metrics_from_ranks
from mrif.models import build_model
from mrif.models.base import SequentialRecommender
from mrif.models.mrif import MRIF, PretrainingMissingError
from mrif.models.sasrec import SASRec
from mrif.training import FitResult, evaluate_untrained, fit, seed_everything

logger = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
TEST_RANKS = "test_ranks.parquet"
"""Per evaluated user: sampled rank, number of sampled negatives, full-ranking rank."""
PROTOCOLS = ("sampled", "full")


class RunError(RuntimeError):
    """A run directory that cannot be written or read."""


def train_run(
    data: str,
    model_name: str,
    out_dir: Path | str,
    config: RunConfig,
    *,
    data_seed: int | None = None,
    pretrained: Path | str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``model_name`` on ``data`` (a registered name, prepared directory or raw file),
    select on validation, test once, and write the run directory. Returns ``metrics.json``.

    The run is built in a hidden directory beside ``out_dir`` and renamed into place only when
    it is complete: a failed run leaves nothing behind, and ``overwrite`` replaces a finished
    run as a whole or not at all.
    """
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    _check_device(config.train.device)
    if pretrained is not None and not model_name.startswith("mrif"):
        raise RunError(f"--pretrained applies to MRIF models only; got --model {model_name}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    log_handler = _attach_log(work_dir / "train.log")
    try:
        metrics = _train_run(data, model_name, work_dir, config, data_seed, pretrained, progress)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    finally:
        logging.getLogger("mrif").removeHandler(log_handler)
        log_handler.close()
    _replace_dir(work_dir, out_dir)
    return metrics


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        finished = (out_dir / "metrics.json").exists()
        what = "already holds a finished run" if finished else "exists and is not empty"
        raise RunError(f"--out {out_dir} {what}; choose another --out or pass --overwrite")


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing what was there only once ``new`` is complete."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _train_run(
    data: str,
    model_name: str,
    out_dir: Path,
    config: RunConfig,
    data_seed: int | None,
    pretrained: Path | str | None,
    progress: bool,
) -> dict[str, Any]:
    started = time.perf_counter()
    train = config.train
    if train.threads:
        torch.set_num_threads(train.threads)
    dataset_dir = resolve_dataset(data, seed=0 if data_seed is None else data_seed)
    dataset = PreparedDataset.load(dataset_dir)
    _check_data_seed(dataset, data_seed)
    _check_trainable(dataset)
    record = _run_record(model_name, data, dataset, config)
    record["pretrained"] = None if pretrained is None else str(Path(pretrained).resolve())
    _write_json(out_dir / "config.json", record)
    shutil.copyfile(dataset_dir / "items.parquet", out_dir / "items.parquet")

    seed_everything(train.seed)
    model = build_model(model_name, dataset.n_items, config.model, dataset.n_users)
    model.fit_statistics([dataset.train_sequence(u) for u in range(dataset.n_users)])
    logger.info("training %s on %s (%d users, %d items) with seed %d", model_name,
                dataset_dir, dataset.n_users, dataset.n_items, train.seed)  # fmt: skip
    pretrain: FitResult | None = None
    if isinstance(model, MRIF):
        if pretrained is not None:
            _check_pretrained_run(Path(pretrained), dataset, config)
            model.load_pretrained_extractor(load_extractor(Path(pretrained)))
        else:
            pretrain = _pretrain_extractor(model, dataset, config, out_dir, progress)
        # Re-seed so that the MRIF stage draws the same dropout masks whether its extractor
        # was pre-trained here or loaded from a SASRec run: both give identical runs.
        seed_everything(train.seed)
    fitted = _fit_checked(model, dataset, train, progress)
    save_weights(model, out_dir / WEIGHTS)

    test_started = time.perf_counter()
    test = score_sampled(
        model, dataset, "test", batch_size=train.eval_batch_size, device=train.device
    )
    sampled_seconds = time.perf_counter() - test_started
    test_ranks_full = full_ranks(
        model, dataset, "test", batch_size=train.eval_batch_size // 2,
        item_chunk=train.item_chunk, device=train.device,
    )  # fmt: skip
    test_full = full_metrics_from_ranks(test_ranks_full)
    full_seconds = time.perf_counter() - test_started - sampled_seconds
    pl.DataFrame(
        {
            "user_id": dataset.eval_users,
            "rank_sampled": test.ranks,
            "n_negatives": dataset.n_negatives,
            "rank_full": test_ranks_full,
        }
    ).write_parquet(out_dir / TEST_RANKS)

    metrics = {
        "model": model_name,
        "dataset": _dataset_record(data, dataset),
        "seed": train.seed,
        "loss": f"{train.loss} (one sampled negative per step)",
        "lr": train.lr or model.default_lr,
        "best_epoch": fitted.best_epoch,
        "epochs_run": fitted.epochs_run,
        "valid": fitted.best_valid,
        "test": test.metrics,
        "test_full": test_full,
        "evaluation": {
            "n_eval_users": int(test.n_users),
            "n_gauc_skipped": int(test.n_gauc_skipped),
            "n_train_only_users": int(dataset.meta.get("n_train_only_users", 0)),
            "n_short_negative_users": int(dataset.meta.get("n_short_negative_users", 0)),
        },
        "pretrained_from": record["pretrained"],
        "pretrain": None
        if pretrain is None
        else {
            "best_epoch": pretrain.best_epoch,
            "epochs_run": pretrain.epochs_run,
            "valid": pretrain.best_valid,
        },
        "timing": {
            "pretrain_seconds": None if pretrain is None else round(pretrain.seconds, 2),
            "train_seconds": round(fitted.seconds, 2),
            "seconds_per_epoch": round(fitted.seconds_per_epoch, 3),
            "test_sampled_seconds": round(sampled_seconds, 3),
            "test_full_seconds": round(full_seconds, 3),
            "total_seconds": round(time.perf_counter() - started, 2),
        },
        "history": fitted.history,
        "environment": _environment(train.device),
    }
    _write_json(out_dir / "metrics.json", metrics)
    logger.info("test (sampled): %s", _format(test.metrics))
    logger.info("test (full ranking): %s", _format(test_full))
    return metrics


def _fit_checked(
    model: SequentialRecommender, dataset: PreparedDataset, train: TrainConfig, progress: bool
) -> FitResult:
    if isinstance(model, MRIF) and not bool(model.extractor_is_pretrained):
        raise PretrainingMissingError(
            "MRIF needs a pre-trained interest extractor (PROTOCOL rule 19); "
            "train without --pretrained to pre-train it, or pass a SASRec run"
        )
    if not model.is_trainable:
        return evaluate_untrained(model, dataset, train)
    return fit(model, dataset, train, stage=model.name, progress=progress)


def _pretrain_extractor(
    model: MRIF, dataset: PreparedDataset, config: RunConfig, out_dir: Path, progress: bool
) -> FitResult:
    """Pre-train the extractor with the SASRec next-item objective, then hand it to MRIF.

    Re-seeding first makes this stage exactly ``mrif train --model sasrec`` with the same seed
    and ``epochs``, ``patience`` and ``lr`` set to the pre-training values, so a SASRec run can
    stand in for it (``--pretrained``).
    """
    train = config.train
    seed_everything(train.seed)
    extractor = SASRec(dataset.n_items, config.model)
    result = fit(
        extractor, dataset, train, epochs=train.pretrain_epochs, patience=train.pretrain_patience,
        lr=train.pretrain_lr, stage="pretrain", progress=progress,
    )  # fmt: skip
    (out_dir / "pretrain").mkdir(exist_ok=True)
    save_weights(extractor, out_dir / "pretrain" / WEIGHTS)
    model.load_pretrained_extractor(extractor.encoder.state_dict())
    return result


def load_extractor(path: Path) -> dict[str, torch.Tensor]:
    """The ``SequenceEncoder`` weights of a SASRec run directory or weights file."""
    weights = path / WEIGHTS if path.is_dir() else path
    if not weights.exists():
        raise PretrainingMissingError(
            f"pre-trained extractor not found: {weights} (expected a SASRec run directory or "
            f"its {WEIGHTS})"
        )
    state = _load_weights(weights)
    prefix = "encoder."
    encoder = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not encoder:
        raise PretrainingMissingError(f"{weights} holds no encoder weights")
    return encoder


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except Exception as error:  # safetensors raises its own error types
        raise RunError(f"{path}: not a readable safetensors weights file ({error})") from None


def _check_pretrained_run(path: Path, dataset: PreparedDataset, config: RunConfig) -> None:
    """A SASRec run used as MRIF's extractor must match the dataset and the encoder shape."""
    record_path = path / "config.json"
    if not path.is_dir() or not record_path.exists():
        return  # a bare weights file: only its tensor shapes can be checked, at load time
    record = _read_record(record_path)
    if record.get("model") != "sasrec":
        raise RunError(f"--pretrained {path} is a {record.get('model')} run; give a SASRec run")
    theirs = record.get("dataset", {}).get("path")
    if theirs != str(Path(dataset.path).resolve()):
        raise RunError(f"--pretrained {path} was trained on {theirs}, not on {dataset.path}")
    ours, their_model = config.model, record.get("config", {}).get("model", {})
    for key in ("dim", "n_heads", "n_layers", "max_len"):
        if their_model.get(key) != getattr(ours, key):
            raise RunError(
                f"--pretrained {path} has {key}={their_model.get(key)}; this run needs "
                f"{key}={getattr(ours, key)}"
            )
    their_seed = record.get("config", {}).get("train", {}).get("seed")
    if their_seed != config.train.seed:
        warnings.warn(
            f"--pretrained {path} used seed {their_seed}, this run uses seed "
            f"{config.train.seed}; the run will not match one pre-trained inline",
            stacklevel=2,
        )


def _check_data_seed(dataset: PreparedDataset, data_seed: int | None) -> None:
    theirs = dataset.meta.get("sampling_seed")
    if data_seed is not None and theirs != data_seed:
        raise RunError(
            f"{dataset.path} was prepared with sampling seed {theirs}; --data-seed {data_seed} "
            "needs a dataset prepared with that seed (mrif data prepare --seed)"
        )


def _check_trainable(dataset: PreparedDataset) -> None:
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


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RunError(f"{path}: cannot read run record ({error})") from None
    for key in ("model", "dataset", "config"):
        if key not in record:
            raise RunError(f"{path}: run record lacks '{key}'")
    return record


def save_weights(model: SequentialRecommender, path: Path) -> None:
    """Write the state dict as safetensors (written beside, then renamed: never half a file)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    partial = path.with_suffix(".partial")
    save_file(state, str(partial), metadata={"model": model.name, "mrif_version": __version__})
    partial.replace(path)


def load_run(
    run_dir: Path | str, device: str | None = None
) -> tuple[SequentialRecommender, PreparedDataset, RunConfig, dict[str, Any]]:
    """Rebuild a trained model and its dataset from a run directory (on ``device`` if given)."""
    run_dir = Path(run_dir)
    record_path = run_dir / "config.json"
    if not (run_dir / "metrics.json").exists() or not (run_dir / WEIGHTS).exists():
        raise RunError(f"{run_dir} is not a finished run (needs metrics.json and {WEIGHTS})")
    record = _read_record(record_path)
    config = RunConfig.from_dict(record["config"], source=str(record_path))
    if device is not None:
        config = config.with_overrides({}, {"device": device})
    _check_device(config.train.device)
    if config.train.threads:  # the same thread count gives the same float reductions
        torch.set_num_threads(config.train.threads)
    dataset = PreparedDataset.load(Path(record["dataset"]["path"]))
    model = build_model(record["model"], dataset.n_items, config.model, dataset.n_users)
    model.load_state_dict(_load_weights(run_dir / WEIGHTS))
    model.to(config.train.device)
    return model, dataset, config, record


def evaluate_run(
    run_dir: Path | str, protocol: str = "sampled", device: str | None = None
) -> dict[str, float]:
    """Score the saved weights on the test target again; equals ``metrics.json``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    model, dataset, config, _ = load_run(run_dir, device)
    train = config.train
    if protocol == "sampled":
        return score_sampled(
            model, dataset, "test", batch_size=train.eval_batch_size, device=train.device
        ).metrics
    ranks = full_ranks(
        model, dataset, "test", batch_size=train.eval_batch_size // 2,
        item_chunk=train.item_chunk, device=train.device,
    )  # fmt: skip
    return full_metrics_from_ranks(ranks)


def _check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise RunError("device is 'cuda' but torch sees no CUDA device; pass --device cpu")


def _run_record(
    model_name: str, data: str, dataset: PreparedDataset, config: RunConfig
) -> dict[str, Any]:
    return {
        "model": model_name,
        "dataset": _dataset_record(data, dataset),
        "config": config.to_dict(),
        "mrif_version": __version__,
    }


def _dataset_record(data: str, dataset: PreparedDataset) -> dict[str, Any]:
    return {
        "requested": data,
        "path": str(Path(dataset.path).resolve()),
        "name": dataset.meta.get("name"),
        "sampling_seed": dataset.meta.get("sampling_seed"),
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
        "source_sha256": dataset.meta.get("source", {}).get("sha256"),
    }


def _environment(device: str) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("mrif")
    package_logger.addHandler(handler)
    if package_logger.level == logging.NOTSET or package_logger.level > logging.INFO:
        package_logger.setLevel(logging.INFO)
    return handler


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.replace(path)


def _format(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
