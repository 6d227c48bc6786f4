"""The ``mrif`` command line: prepare datasets, train and evaluate models, reproduce the
paper's table."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from mrif import __version__
from mrif.config import ConfigError, RunConfig, load_config
from mrif.interrupts import exit_code, sigterm_as_interrupt
from mrif.models import MODEL_NAMES

logger = logging.getLogger("mrif")

# Flags that override a field of the TOML config: flag -> (section, field, type).
CONFIG_FLAGS: dict[str, tuple[str, str, type]] = {
    "--dim": ("model", "dim", int),
    "--heads": ("model", "n_heads", int),
    "--layers": ("model", "n_layers", int),
    "--dropout": ("model", "dropout", float),
    "--max-len": ("model", "max_len", int),
    "--levels": ("model", "n_levels", int),
    "--window": ("model", "window", int),
    "--ffn-mult": ("model", "ffn_mult", int),
    "--activation": ("model", "activation", str),
    "--norm": ("model", "norm", str),
    "--embedding-norm": ("model", "embedding_norm", bool),
    "--positions": ("model", "positions", str),
    "--distance-bias": ("model", "distance_bias", bool),
    "--loss": ("train", "loss", str),
    "--lr": ("train", "lr", float),
    "--batch-size": ("train", "batch_size", int),
    "--epochs": ("train", "epochs", int),
    "--patience": ("train", "patience", int),
    "--valid-every": ("train", "valid_every", int),
    "--pretrain-epochs": ("train", "pretrain_epochs", int),
    "--pretrain-lr": ("train", "pretrain_lr", float),
    "--seed": ("train", "seed", int),
    "--device": ("train", "device", str),
    "--threads": ("train", "threads", int),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrif", description="Multi-resolution interest fusion and sequential baselines."
    )
    parser.add_argument("--version", action="version", version=f"mrif {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="prepare datasets").add_subparsers(
        dest="data_command", required=True
    )
    prepare = data.add_parser("prepare", help="write a prepared dataset directory")
    prepare.add_argument("source", help="registered dataset name or interaction file")
    prepare.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    prepare.add_argument(
        "--format", dest="fmt", help="csv, tsv, parquet, sequence, recbole, amazon-ratings, "
        "amazon-reviews, amazon-2023, movielens-dat or movielens-udata (default: from the file)",
    )  # fmt: skip
    prepare.add_argument("--user-col", help="user column (default: user)")
    prepare.add_argument("--item-col", help="item column (default: item)")
    prepare.add_argument("--time-col", help="timestamp column (default: timestamp)")
    prepare.add_argument("--no-time", action="store_true", help="the file has no timestamps")
    prepare.add_argument("--rating-col", help="rating column, optional (default: rating)")
    prepare.add_argument("--k-core", type=int, help="iterated k-core filter (rule 4)")
    prepare.add_argument("--dedupe", action="store_true", help="keep first (user, item) only")
    prepare.add_argument("--seed", type=int, default=0, help="evaluation-negative sampling seed")
    prepare.add_argument("--negatives", type=int, default=100, help="evaluation negatives")
    prepare.add_argument("--overwrite", action="store_true")
    prepare.add_argument(
        "--skip-bad-lines", action="store_true",
        help="skip and count bad lines instead of stopping at the first (line formats, sequence)",
    )  # fmt: skip
    stats = data.add_parser("stats", help="describe a prepared dataset directory")
    stats.add_argument("dataset", type=Path, help="prepared dataset directory")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")

    train = commands.add_parser("train", help="train a model and write a run directory")
    train.add_argument("--data", default="amazon-beauty", help="name, dataset dir or file")
    train.add_argument("--model", default="mrif-attn", choices=MODEL_NAMES)
    train.add_argument("--out", required=True, type=Path, help="run directory to write")
    train.add_argument("--config", type=Path, help="TOML file with [model] and [train]")
    train.add_argument(
        "--data-seed", type=int, help="evaluation-negative seed of the prepared data (default 0)"
    )
    train.add_argument("--pretrained", type=Path, help="SASRec run whose encoder initialises MRIF")
    train.add_argument("--overwrite", action="store_true", help="replace a finished run")
    train.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    _add_config_flags(train)

    reproduce = commands.add_parser(
        "reproduce", help="train every model for every seed and write the paper-style report"
    )
    reproduce.add_argument("--data", default="amazon-beauty", help="name, dataset dir or file")
    reproduce.add_argument(
        "--models", help=f"comma-separated subset of {','.join(MODEL_NAMES)} (default: all)"
    )
    reproduce.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    reproduce.add_argument("--first-seed", type=int, default=0, help="seeds start here")
    reproduce.add_argument("--out", required=True, type=Path, help="reproduction directory")
    reproduce.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    reproduce.add_argument("--config", type=Path, help="TOML file with [model] and [train]")
    reproduce.add_argument("--data-seed", type=int, help="evaluation-negative seed (default 0)")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    _add_config_flags(reproduce, skip=("--seed",))

    report = commands.add_parser("report", help="rewrite the report of a reproduction directory")
    report.add_argument("out", type=Path, help="directory written by mrif reproduce")

    evaluate = commands.add_parser("evaluate", help="score a run's saved weights again")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("--protocol", choices=("sampled", "full"), default="sampled")
    evaluate.add_argument("--device", choices=("cpu", "cuda"), help="score on this device")

    recommend = commands.add_parser("recommend", help="top-k items from a trained run, in raw ids")
    recommend.add_argument("run_dir", type=Path, help="a finished run (mrif train --out)")
    who = recommend.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--user", action="append", help="raw user id of the dataset (repeat for several)"
    )
    who.add_argument(
        "--history", nargs="+", metavar="ITEM",
        help="raw item ids, oldest first, for a user the dataset does not know "
        "(sequence models only)",
    )  # fmt: skip
    who.add_argument("--all-users", action="store_true", help="every user (needs --out)")
    recommend.add_argument("--k", type=int, default=10, help="items per user (default: 10)")
    recommend.add_argument(
        "--include-seen", action="store_true",
        help="also recommend items already in the history",
    )  # fmt: skip
    recommend.add_argument(
        "--out", type=Path, help="write user, rank, item, score to a .parquet or .csv file"
    )
    recommend.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    recommend.add_argument("--device", choices=("cpu", "cuda"), help="score on this device")
    return parser


def _add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    for flag, (_, name, kind) in CONFIG_FLAGS.items():
        if flag not in skip:
            parse = _parse_switch if kind is bool else kind
            parser.add_argument(flag, type=parse, dest=f"set_{name}", help=f"overrides {name}")


def _parse_switch(text: str) -> bool:
    """``on``/``true``/``1`` or ``off``/``false``/``0`` for a yes-or-no config flag."""
    words = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}
    if text.lower() not in words:
        raise argparse.ArgumentTypeError(f"expected on or off; got {text!r}")
    return words[text.lower()]


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    """The TOML config (or the defaults) with the flags given on the command line applied."""
    config = load_config(args.config)
    overrides: dict[str, dict[str, object]] = {"model": {}, "train": {}}
    for section, name, _ in CONFIG_FLAGS.values():
        value = getattr(args, f"set_{name}", None)
        if value is not None:
            overrides[section][name] = value
    return config.with_overrides(overrides["model"], overrides["train"])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(quiet=getattr(args, "quiet", False) or _is_follower_process())
    commands = {
        "data": _data,
        "train": _train,
        "evaluate": _evaluate,
        "reproduce": _reproduce,
        "report": _report,
        "recommend": _recommend,
    }
    try:
        _check_single_process(args.command)
        with sigterm_as_interrupt():
            return commands[args.command](args)
    except BrokenPipeError:  # the reader went away (``mrif recommend ... | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt as interrupt:
        print("mrif: interrupted", file=sys.stderr)
        return exit_code(interrupt)
    except (ConfigError, ValueError, RuntimeError, FileNotFoundError, OSError) as error:
        print(f"mrif: error: {error}", file=sys.stderr)
        return 2


def _data(args: argparse.Namespace) -> int:
    return _stats(args) if args.data_command == "stats" else _prepare(args)


def _prepare(args: argparse.Namespace) -> int:
    from mrif.data.prepare import prepare_dataset
    from mrif.data.registry import REGISTRY, prepare_registered

    given = {
        "user": args.user_col,
        "item": args.item_col,
        "timestamp": args.time_col,
        "rating": args.rating_col,
    }
    columns: dict[str, str | None] = {k: v for k, v in given.items() if v is not None}
    if args.no_time:
        columns["timestamp"] = None
    common = {
        "seed": args.seed,
        "n_eval_negatives": args.negatives,
        "overwrite": args.overwrite,
        "skip_bad_lines": args.skip_bad_lines,
    }
    if not Path(args.source).exists() and args.source in REGISTRY:
        entry = REGISTRY[args.source]
        changed = [flag for flag, value in _recipe_flags(args) if value is not None]
        if changed:
            raise ValueError(
                f"{', '.join(changed)} would change the recipe of {entry.name} (format "
                f"{entry.fmt}, k-core {entry.k_core}, dedupe {entry.dedupe}); to prepare it "
                "differently, pass the raw file's path instead of the name"
            )
        out = prepare_registered(args.source, args.out, **common)
    else:
        out = prepare_dataset(
            args.source, args.out, fmt=args.fmt, columns=columns, k_core=args.k_core,
            dedupe=args.dedupe, **common,
        )  # fmt: skip
    meta = json.loads((Path(out) / "meta.json").read_text())
    skipped = meta["source"].get("n_bad_lines_skipped", 0)
    print(
        f"{out}: {meta['n_users']} users, {meta['n_items']} items, "
        f"{meta['n_interactions']} interactions, {meta['n_eval_users']} evaluated users"
        + (f"; {skipped} bad lines skipped" if args.skip_bad_lines else "")
    )
    return 0


def _recipe_flags(args: argparse.Namespace) -> list[tuple[str, object]]:
    """Flags that set what a registered recipe fixes, each with its value or None if unset."""
    return [
        ("--format", args.fmt), ("--user-col", args.user_col), ("--item-col", args.item_col),
        ("--time-col", args.time_col), ("--no-time", args.no_time or None),
        ("--rating-col", args.rating_col), ("--k-core", args.k_core),
        ("--dedupe", args.dedupe or None),
    ]  # fmt: skip


def _stats(args: argparse.Namespace) -> int:
    from mrif.data.stats import dataset_stats, format_stats

    stats = dataset_stats(args.dataset)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _train(args: argparse.Namespace) -> int:
    from mrif import distributed
    from mrif.runs import train_run

    config = _config_from_args(args)
    progress = not args.quiet and sys.stderr.isatty()
    world = distributed.start(config.train.device)
    try:
        metrics = train_run(
            args.data, args.model, args.out, config, data_seed=args.data_seed,
            pretrained=args.pretrained, overwrite=args.overwrite, progress=progress,
            world=world,
        )  # fmt: skip
    finally:
        distributed.stop(world)
    if world.is_main:
        print(json.dumps({"test": metrics["test"], "test_full": metrics["test_full"]}, indent=2))
    return 0


def _check_single_process(command: str) -> None:
    """Only ``mrif train`` runs as one of several processes (``mrif.distributed``)."""
    from mrif.distributed import launched_world_size

    if command != "train" and launched_world_size() > 1:
        raise ValueError(
            f"mrif {command} runs in one process; only mrif train can be launched with "
            "torchrun (mrif reproduce trains several runs at once with --jobs)"
        )


def _is_follower_process() -> bool:
    """True in a torchrun process other than rank 0: it logs warnings only."""
    from mrif.distributed import DistributedError, launched_world_size

    try:
        distributed = launched_world_size() > 1
    except DistributedError:  # reported when the command starts
        distributed = False
    return distributed and os.environ.get("RANK", "0") != "0"


def _evaluate(args: argparse.Namespace) -> int:
    from mrif.runs import evaluate_run

    metrics = evaluate_run(args.run_dir, args.protocol, args.device)
    print(json.dumps({"protocol": args.protocol, "test": metrics}, indent=2))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from mrif.reproduce import parse_models, reproduce

    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1; got {args.seeds}")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    paths = reproduce(
        args.data, parse_models(args.models), seeds, args.out, _config_from_args(args),
        jobs=args.jobs, data_seed=args.data_seed,
        progress=not args.quiet and sys.stderr.isatty(),
    )  # fmt: skip
    print("\n".join(f"{name}: {path}" for name, path in paths.items()))
    return 0


def _report(args: argparse.Namespace) -> int:
    from mrif.report import write_report

    paths = write_report(args.out)
    print("\n".join(f"{name}: {path}" for name, path in paths.items()))
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from mrif.recommend import check_output_path, load_recommender, write_recommendations

    if args.all_users and args.out is None:
        raise ValueError("--all-users needs --out FILE (.parquet or .csv)")
    if args.out is not None:  # refused before loading and scoring, not after
        check_output_path(args.out, args.overwrite, protected=[args.run_dir])
    recommender = load_recommender(args.run_dir, args.device)
    if args.out is not None:
        check_output_path(args.out, args.overwrite, protected=[recommender.dataset.path])
    exclude_seen = not args.include_seen
    if args.history:
        recommendations = recommender.for_history(args.history, args.k, exclude_seen)
    else:
        users = None if args.all_users else args.user
        recommendations = recommender.for_users(users, args.k, exclude_seen)
    if args.out is not None:
        path = write_recommendations(recommendations, args.out)
        print(f"{path}: {len(recommendations.users)} users, up to {args.k} items each")
        return 0
    # Tab-separated; ids holding a tab, newline or quote are quoted, as in CSV.
    table = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
    table.writerow(["user", "rank", "item", "score"])
    table.writerows(recommendations.to_frame().iter_rows())
    return 0


def _configure_logging(quiet: bool) -> None:
    """Send the package's log lines to the current stderr, replacing an earlier handler (the
    CLI may be called several times in one process, as in tests)."""
    for handler in [h for h in logger.handlers if getattr(h, "mrif_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    handler.mrif_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # the run's train.log always gets the epoch lines
    # Data warnings are for the user, not the developer: the message, without source lines.
    warnings.formatwarning = _format_warning


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {message}\n"


__all__ = ["build_parser", "main"]
