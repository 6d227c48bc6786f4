"""Run directories: train a model on a prepared dataset, save it, and score it again later.

A run directory holds ``config.json`` (resolved config, model, dataset), ``weights.safetensors``
(selected weights; loads without unpickling code), ``items.parquet`` and ``users.parquet`` (the
raw item and user ids, so recommendations speak raw ids), ``metrics.json``,
``test_ranks.parquet`` (per-user test ranks for significance tests) and ``train.log``. MRIF
runs also keep their pre-trained extractor under ``pretrain/``.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch

from mrif import __version__
from mrif.config import SPEED_ONLY, RunConfig, TrainConfig
from mrif.data.dataset import PreparedDataset
from mrif.data.registry import resolve_dataset
from mrif.distributed import SINGLE_PROCESS, World
from mrif.evaluation import full_ranks, score_sampled
from mrif.metrics import full_metrics_from_ranks
from mrif.models import build_model
from mrif.models.base import SequentialRecommender
from mrif.models.mrif import MRIF, PretrainingMissingError
from mrif.models.sasrec import SASRec
from mrif.run_checks import check_data_seed, check_device, check_pretrained_run, check_trainable
from mrif.run_dir import (
    ID_FILES,
    TEST_RANKS,
    WEIGHTS,
    RunError,
    check_out_dir,
    load_extractor,
    load_weights,
    read_record,
    replace_dir,
    save_weights,
    write_json,
)
from mrif.training import FitResult, check_loss, evaluate_untrained, fit, seed_everything

logger = logging.getLogger(__name__)

DISTRIBUTED_MAY_DIFFER = SPEED_ONLY - {("train", "eval_batch_size")}
"""Settings the processes of one distributed run may set differently (``mrif.distributed``)."""

LOSS_DESCRIPTIONS = {
    "bce": "bce (one sampled negative per step)",
    "ce": "ce (softmax over every item at every step)",
}

PROTOCOLS = ("sampled", "full")

__all__ = [
    "PROTOCOLS",
    "TEST_RANKS",
    "WEIGHTS",
    "RunError",
    "evaluate_run",
    "load_extractor",
    "load_run",
    "save_weights",
    "train_run",
]


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
    world: World = SINGLE_PROCESS,
) -> dict[str, Any]:
    """Train ``model_name`` on ``data`` (a registered name, prepared directory or raw file),
    select on validation, test once, and write the run directory. Returns ``metrics.json``.

    The run is built in a hidden directory beside ``out_dir`` and renamed into place only when
    it is complete: a failed run leaves nothing behind, and ``overwrite`` replaces a finished
    run as a whole or not at all.

    With a distributed ``world`` (``mrif.distributed``) every process calls this with the same
    arguments and trains its share; rank 0 alone tests the model, writes ``out_dir`` and
    returns the metrics, the others return an empty dict.
    """
    out_dir = Path(out_dir)
    with world.fail_together("checking the run"):
        if world.is_main:  # the only process that writes
            check_out_dir(out_dir, overwrite)
        check_device(config.train.device)
        if pretrained is not None and not model_name.startswith("mrif"):
            raise RunError(f"--pretrained applies to MRIF models only; got --model {model_name}")
    if not world.is_main:
        scratch = Path(tempfile.mkdtemp(prefix=f"mrif-rank{world.rank}-"))
        try:
            _train_run(data, model_name, scratch, config, data_seed, pretrained, False, world)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return {}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    log_handler = _attach_log(work_dir / "train.log")
    if config.model.positions == "backward":
        logger.warning(
            "positions=backward breaks rule 22 (a training step sees how many items follow "
            "it): use this run to measure that effect, not as a result"
        )
    try:
        metrics = _train_run(
            data, model_name, work_dir, config, data_seed, pretrained, progress, world
        )
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    finally:
        logging.getLogger("mrif").removeHandler(log_handler)
        log_handler.close()
    replace_dir(work_dir, out_dir)
    return metrics


def _train_run(
    data: str,
    model_name: str,
    out_dir: Path,
    config: RunConfig,
    data_seed: int | None,
    pretrained: Path | str | None,
    progress: bool,
    world: World = SINGLE_PROCESS,
) -> dict[str, Any]:
    """Train and test in ``out_dir``; a process other than rank 0 stops after training."""
    started = time.perf_counter()
    train = config.train
    if train.threads:
        torch.set_num_threads(train.threads)
    with world.fail_together("loading the dataset"):
        with world.local_main_first():  # one download or preparation per machine
            dataset_dir = resolve_dataset(data, seed=0 if data_seed is None else data_seed)
        dataset = PreparedDataset.load(dataset_dir)
        check_data_seed(dataset, data_seed)
        check_trainable(dataset)
    record = _run_record(model_name, data, dataset, config)
    world.check_same(_training_fingerprint(record, dataset, pretrained is not None))
    record["pretrained"] = None if pretrained is None else str(Path(pretrained).resolve())
    write_json(out_dir / "config.json", record)
    for id_file in ID_FILES:
        shutil.copyfile(dataset_dir / id_file, out_dir / id_file)

    seed_everything(train.seed)
    model = build_model(model_name, dataset.n_items, config.model, dataset.n_users)
    check_loss(model, train.loss)
    model.fit_statistics([dataset.train_sequence(u) for u in range(dataset.n_users)])
    logger.info("training %s on %s (%d users, %d items) with seed %d", model_name,
                dataset_dir, dataset.n_users, dataset.n_items, train.seed)  # fmt: skip
    pretrain: FitResult | None = None
    if isinstance(model, MRIF):
        if pretrained is not None:
            with world.fail_together("loading the pre-trained run"):
                check_pretrained_run(Path(pretrained), dataset, config)
                model.load_pretrained_extractor(load_extractor(Path(pretrained)))
        else:
            pretrain = _pretrain_extractor(model, dataset, config, out_dir, progress, world)
        # Re-seed so that the MRIF stage draws the same dropout masks whether its extractor
        # was pre-trained here or loaded from a SASRec run: both give identical runs.
        seed_everything(train.seed)
    fitted = _fit_checked(model, dataset, train, progress, world)
    if not world.is_main:
        return {}
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
        "loss": LOSS_DESCRIPTIONS[train.loss],
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
        "environment": _environment(train.device, world),
    }
    write_json(out_dir / "metrics.json", metrics)
    logger.info("test (sampled): %s", _format(test.metrics))
    logger.info("test (full ranking): %s", _format(test_full))
    return metrics


def _fit_checked(
    model: SequentialRecommender,
    dataset: PreparedDataset,
    train: TrainConfig,
    progress: bool,
    world: World = SINGLE_PROCESS,
) -> FitResult:
    if isinstance(model, MRIF) and not bool(model.extractor_is_pretrained):
        raise PretrainingMissingError(
            "MRIF needs a pre-trained interest extractor (PROTOCOL rule 19); "
            "train without --pretrained to pre-train it, or pass a SASRec run"
        )
    if not model.is_trainable:
        return evaluate_untrained(model, dataset, train)
    return fit(model, dataset, train, stage=model.name, progress=progress, world=world)


def _pretrain_extractor(
    model: MRIF,
    dataset: PreparedDataset,
    config: RunConfig,
    out_dir: Path,
    progress: bool,
    world: World = SINGLE_PROCESS,
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
        lr=train.pretrain_lr, stage="pretrain", progress=progress, world=world,
    )  # fmt: skip
    (out_dir / "pretrain").mkdir(exist_ok=True)
    save_weights(extractor, out_dir / "pretrain" / WEIGHTS)
    model.load_pretrained_extractor(extractor.encoder.state_dict())
    return result


def load_run(
    run_dir: Path | str, device: str | None = None
) -> tuple[SequentialRecommender, PreparedDataset, RunConfig, dict[str, Any]]:
    """Rebuild a trained model and its dataset from a run directory (on ``device`` if given)."""
    run_dir = Path(run_dir)
    record_path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if not (run_dir / "metrics.json").exists() or not (run_dir / WEIGHTS).exists():
        raise RunError(f"{run_dir} is not a finished run (needs metrics.json and {WEIGHTS})")
    record = read_record(record_path)
    config = RunConfig.from_dict(record["config"], source=str(record_path))
    if device is not None:
        config = config.with_overrides({}, {"device": device})
    check_device(config.train.device)
    if config.train.threads:  # the same thread count gives the same float reductions
        torch.set_num_threads(config.train.threads)
    dataset = PreparedDataset.load(Path(record["dataset"]["path"]))
    check_dataset_unchanged(record, dataset, run_dir)
    model = build_model(record["model"], dataset.n_items, config.model, dataset.n_users)
    try:
        model.load_state_dict(load_weights(run_dir / WEIGHTS))
    except RuntimeError as error:  # shapes or names that do not fit the recorded model
        message = f"{run_dir / WEIGHTS} does not fit a {record['model']} model: {error}"
        raise RunError(message) from None
    model.to(config.train.device)
    return model, dataset, config, record


def check_dataset_unchanged(
    record: dict[str, Any], dataset: PreparedDataset, run_dir: Path
) -> None:
    """Refuse a dataset whose user or item count differs from the one the run recorded: the
    saved weights would not fit it, or would be read with other ids."""
    recorded = record["dataset"]
    now = {"users": dataset.n_users, "items": dataset.n_items}
    then = {"users": recorded.get("n_users"), "items": recorded.get("n_items")}
    if now != then:
        raise RunError(
            f"the dataset at {dataset.path} has {now['users']} users and {now['items']} items, "
            f"but run {run_dir} was trained on {then['users']} and {then['items']}: it was "
            "prepared again from other data; train a new run on it"
        )


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
        "format_version": dataset.meta.get("format_version"),
    }


def _training_fingerprint(
    record: dict[str, Any], dataset: PreparedDataset, pretrained: bool
) -> dict[str, str]:
    """What every process of a distributed run must share, by name: the software, the model,
    each setting that changes what is computed (threads and the full-ranking chunk may
    differ; the validation batch may not, since processes split validation by batches),
    whether a pre-trained run is given (with it, no process runs the pre-training stage) and
    the prepared data (its counts, recipe and source checksum; not where each machine keeps
    it)."""
    config = record["config"]
    shared = {
        "mrif version": record["mrif_version"],
        "torch version": torch.__version__,
        "model": record["model"],
        "--pretrained given": str(pretrained),
    }
    for section in ("model", "train"):
        for key, value in config[section].items():
            if (section, key) not in DISTRIBUTED_MAY_DIFFER:
                shared[f"{section}.{key}"] = json.dumps(value)
    meta = dataset.meta
    for key, value in meta.items():
        if key != "source":
            shared[f"data {key}"] = json.dumps(value, sort_keys=True)
    shared["data source sha256"] = str(meta.get("source", {}).get("sha256"))
    return shared


def _environment(device: str, world: World = SINGLE_PROCESS) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "processes": world.size,  # data-parallel training processes (mrif.distributed)
    }


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger = logging.getLogger("mrif")
    package_logger.addHandler(handler)
    if package_logger.level == logging.NOTSET or package_logger.level > logging.INFO:
        package_logger.setLevel(logging.INFO)
    return handler


def _format(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
