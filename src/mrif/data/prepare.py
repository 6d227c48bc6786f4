"""Turn a raw interaction file into a prepared dataset directory.

The directory is the contract every model and evaluation reads (see ``dataset.py``):
``meta.json``, ``items.parquet``, ``users.parquet``, ``histories.parquet``,
``split.parquet`` and ``negatives.parquet``. It is built in a temporary directory beside
``out_dir`` and renamed into place at the end, so an interrupted run never leaves a
directory that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np
import polars as pl

from mrif.data.dataset import FORMAT_VERSION
from mrif.data.kcore import kcore_filter
from mrif.data.readers import detect_format, read_interactions_with_skips, source_sha256

logger = logging.getLogger(__name__)

SORT_BY_TIME = "stable by timestamp, ties in file order"
SORT_FILE_ORDER = "file order"
SPLIT_RULE = "leave-one-out: last=test, second-to-last=valid"
MIN_EVAL_LENGTH = 3  # train item + valid target + test target (PROTOCOL.md rule 7)
_ColumnArg = Literal["user_col", "item_col", "time_col", "rating_col"]
_COLUMN_ROLES: dict[str, _ColumnArg] = {
    "user": "user_col",
    "item": "item_col",
    "timestamp": "time_col",
    "rating": "rating_col",
}


def prepare_dataset(
    source: str | Path,
    out_dir: str | Path,
    *,
    fmt: str | None = None,
    columns: Mapping[str, str | None] | None = None,
    k_core: int | None = None,
    dedupe: bool = False,
    seed: int = 0,
    n_eval_negatives: int = 100,
    name: str | None = None,
    overwrite: bool = False,
    skip_bad_lines: bool = False,
) -> Path:
    """Read, filter, sort, remap, split and sample negatives; write the dataset to ``out_dir``.

    Args:
        source: raw file in any format of ``readers.py`` (may be gzip).
        out_dir: directory to create; an existing non-empty one needs ``overwrite=True``.
        fmt: format name, detected from the file name when None.
        columns: raw column names by role, keys ``user``, ``item``, ``timestamp``, ``rating``.
        k_core: iterated k-core on users and items (rule 4); None keeps everything.
        dedupe: keep only the first (earliest) event of each (user, item) pair (rule 3).
        seed: seed of the evaluation negatives (numpy PCG64).
        n_eval_negatives: negatives per evaluated user, drawn without replacement (rule 9).
        name: dataset name for meta.json; defaults to the file name without suffixes.
        overwrite: replace a complete ``out_dir``.
        skip_bad_lines: drop bad lines (line formats and sequence files) instead of failing
            at the first; their count goes to meta.json (``source.n_bad_lines_skipped``).

    Note:
        Users are numbered 0.. by their first row in the file, items 1.. by first appearance
        in the sorted histories (rule 5). Users with fewer than 3 interactions stay train-only
        (CASES.md B15). Dedupe runs before k-core, so k-core then counts distinct pairs.
    """
    _check_options(k_core, seed, n_eval_negatives)
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    fmt = detect_format(source) if fmt is None else fmt

    df, skipped = read_interactions_with_skips(
        source, fmt=fmt, skip_bad_lines=skip_bad_lines, **_column_kwargs(columns)
    )
    n_rows = df.height
    has_time = df.schema["timestamp"] != pl.Null
    df = _sort_histories(df)
    if dedupe:
        before = df.height
        df = df.unique(["user", "item"], keep="first", maintain_order=True)
        logger.info("dedupe: dropped %d repeated (user, item) events", before - df.height)
    if k_core is not None:
        df = kcore_filter(df, k_core)
        # Filtering can remove a user's first row, so first appearance is recomputed.
        df = _sort_histories(df)
    if df.height == 0:
        raise ValueError(f"k_core={k_core} removed every interaction of {source}")

    items, users, histories, csr = _remap(df, has_time)
    offsets, values = csr
    n_users, n_items = users.height, items.height
    split, eval_users = _leave_one_out(offsets, values)
    negatives = draw_eval_negatives(offsets, values, eval_users, n_items, n_eval_negatives, seed)
    n_short = sum(len(negs) < n_eval_negatives for negs in negatives)
    _warn_data_conditions(n_users, eval_users.size, n_short, n_eval_negatives)

    meta = {
        "format_version": FORMAT_VERSION,
        "name": name if name is not None else _default_name(source),
        "source": {
            "path": str(Path(source).resolve()),
            "format": fmt,
            "sha256": source_sha256(source),
            "n_rows": n_rows,
            "n_bad_lines_skipped": skipped.count,
            "bad_line_examples": list(skipped.examples),
        },
        "recipe": {
            "k_core": k_core,
            "dedupe": dedupe,
            "skip_bad_lines": skip_bad_lines,
            "sort": SORT_BY_TIME if has_time else SORT_FILE_ORDER,
        },
        "sampling_seed": seed,
        "n_eval_negatives": n_eval_negatives,
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": int(values.size),
        "n_eval_users": int(eval_users.size),
        "n_train_only_users": n_users - int(eval_users.size),
        "n_short_negative_users": n_short,
        "split": SPLIT_RULE,
    }
    negatives_table = pl.DataFrame(
        {
            "user_id": pl.Series(eval_users, dtype=pl.Int32),
            # numpy rows of equal length would become a fixed-size Array without the cast.
            "negatives": pl.Series(negatives, dtype=pl.List(pl.Int32)).cast(pl.List(pl.Int32)),
        }
    )

    def write(tmp: Path) -> None:
        items.write_parquet(tmp / "items.parquet")
        users.write_parquet(tmp / "users.parquet")
        histories.write_parquet(tmp / "histories.parquet")
        split.write_parquet(tmp / "split.parquet")
        negatives_table.write_parquet(tmp / "negatives.parquet")
        # meta.json last: its presence marks a complete directory.
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    _write_atomically(out_dir, write, overwrite)
    logger.info(
        "prepared %s: %d users (%d evaluated), %d items, %d interactions -> %s",
        meta["name"], n_users, eval_users.size, n_items, values.size, out_dir,
    )  # fmt: skip
    return out_dir


def draw_eval_negatives(
    item_offsets: np.ndarray,
    item_values: np.ndarray,
    users: np.ndarray,
    n_items: int,
    n_negatives: int,
    seed: int,
) -> list[np.ndarray]:
    """Per user, ``n_negatives`` items drawn uniformly without replacement from the unseen pool.

    The pool is ``1..n_items`` minus the user's whole history (valid and test targets
    included). A pool of at most ``n_negatives`` items is returned whole (CASES.md B06).
    Users are drawn in the given order from one ``Generator(PCG64(seed))``; each result is
    sorted ascending (int32), since candidate order carries no meaning when ties never favour
    the target.

    >>> offsets, values = np.array([0, 5]), np.arange(1, 6)
    >>> negs = draw_eval_negatives(offsets, values, np.array([0]), 105, 100, seed=7)
    >>> negs[0].tolist() == list(range(6, 106))
    True
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    out = []
    for user in users:
        seen = np.unique(item_values[item_offsets[user] : item_offsets[user + 1]])
        n_pool = n_items - seen.size
        if n_pool <= n_negatives:
            ranks = np.arange(n_pool)
        else:
            ranks = np.sort(rng.choice(n_pool, size=n_negatives, replace=False))
        # Sample ranks in the pool, then map rank r to its item: r + 1 plus the number of
        # seen items below it; seen[i] has seen[i] - (i + 1) unseen items below it.
        unseen_below = seen - np.arange(1, seen.size + 1)
        items = ranks + 1 + np.searchsorted(unseen_below, ranks, side="right")
        out.append(items.astype(np.int32))
    return out


def _check_options(k_core: int | None, seed: int, n_eval_negatives: int) -> None:
    if k_core is not None and not _is_int_at_least(k_core, 1):
        raise ValueError(f"k_core must be None or a positive integer; got {k_core!r}")
    if not _is_int_at_least(seed, 0):
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if not _is_int_at_least(n_eval_negatives, 0):
        raise ValueError(
            f"n_eval_negatives must be a non-negative integer; got {n_eval_negatives!r}"
        )


def _is_int_at_least(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"out_dir {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"out_dir {out_dir} exists and is not empty; pass overwrite=True")


class _ColumnNames(TypedDict, total=False):
    user_col: str | None
    item_col: str | None
    time_col: str | None
    rating_col: str | None


def _column_kwargs(columns: Mapping[str, str | None] | None) -> _ColumnNames:
    if columns is None:
        return {}
    unknown = sorted(set(columns) - set(_COLUMN_ROLES))
    if unknown:
        raise ValueError(f"columns keys must be among {sorted(_COLUMN_ROLES)}; got {unknown}")
    names: _ColumnNames = {}
    for role, name in columns.items():
        names[_COLUMN_ROLES[role]] = name
    return names


def _sort_histories(df: pl.DataFrame) -> pl.DataFrame:
    """Users by first row in the file; each history by timestamp, ties in file order (rule 2)."""
    first_row = pl.col("order").min().over("user").alias("_first_row")
    return df.with_columns(first_row).sort(["_first_row", "timestamp", "order"]).drop("_first_row")


def _remap(
    df: pl.DataFrame, has_time: bool
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, tuple[np.ndarray, np.ndarray]]:
    """Id tables, histories table and the CSR (offsets, values) of the sorted frame."""
    raw_items = df["item"].unique(maintain_order=True)
    raw_users = df["user"].unique(maintain_order=True)
    items = pl.DataFrame(
        {
            "item_id": pl.int_range(1, raw_items.len() + 1, dtype=pl.Int32, eager=True),
            "raw_item": raw_items,
        }
    )
    users = pl.DataFrame(
        {
            "user_id": pl.int_range(raw_users.len(), dtype=pl.Int32, eager=True),
            "raw_user": raw_users,
        }
    )
    item_ids = df["item"].replace_strict(raw_items, items["item_id"], return_dtype=pl.Int32)
    user_ids = df["user"].replace_strict(raw_users, users["user_id"], return_dtype=pl.Int32)

    frame = pl.DataFrame({"user_id": user_ids, "items": item_ids, "timestamps": df["timestamp"]})
    histories = frame.group_by("user_id", maintain_order=True).agg("items", "timestamps")
    if not has_time:
        no_times = pl.lit(None, dtype=pl.List(pl.Int64)).alias("timestamps")
        histories = histories.with_columns(no_times)

    lengths = histories["items"].list.len().to_numpy()
    offsets = np.zeros(users.height + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return items, users, histories, (offsets, item_ids.to_numpy())


def _leave_one_out(offsets: np.ndarray, values: np.ndarray) -> tuple[pl.DataFrame, np.ndarray]:
    """Split table (rules 6-7) and the ids of evaluated users."""
    lengths = np.diff(offsets)
    is_eval = lengths >= MIN_EVAL_LENGTH
    ends = offsets[1:]
    valid = np.where(is_eval, values[np.maximum(ends - 2, 0)], 0)
    test = np.where(is_eval, values[np.maximum(ends - 1, 0)], 0)
    split = pl.DataFrame(
        {
            "user_id": pl.Series(np.arange(lengths.size), dtype=pl.Int32),
            "train_len": pl.Series(np.where(is_eval, lengths - 2, lengths), dtype=pl.Int32),
            "valid_target": pl.Series(valid, dtype=pl.Int32),
            "test_target": pl.Series(test, dtype=pl.Int32),
        }
    )
    train_only = pl.Series(~is_eval)
    split = split.with_columns(
        pl.when(train_only).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("valid_target", "test_target")
    )
    return split, np.flatnonzero(is_eval).astype(np.int32)


def _warn_data_conditions(n_users: int, n_eval: int, n_short: int, n_negatives: int) -> None:
    if n_eval < n_users:
        warnings.warn(
            f"{n_users - n_eval} of {n_users} users have fewer than {MIN_EVAL_LENGTH} "
            "interactions and are kept train-only (no valid/test target); "
            f"use k_core>={MIN_EVAL_LENGTH} to drop them",
            stacklevel=3,
        )
    if n_short:
        warnings.warn(
            f"{n_short} of {n_eval} evaluated users have fewer than n_eval_negatives="
            f"{n_negatives} unseen items; their whole unseen pool is used instead",
            stacklevel=3,
        )


def _default_name(source: str | Path) -> str:
    return Path(Path(source).name.removesuffix(".gz")).stem


def _write_atomically(out_dir: Path, write: Callable[[Path], None], overwrite: bool) -> None:
    """Run ``write`` into a temp dir beside ``out_dir``, then rename it into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a dataset is meant to be shared
        if overwrite and out_dir.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, out_dir)  # succeeds only if out_dir is absent or empty
            except OSError as err:
                # Another process finished first: its complete directory is kept.
                message = f"out_dir {out_dir} appeared while preparing ({err})"
                raise FileExistsError(message) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
