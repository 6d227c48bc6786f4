"""Turn a raw interaction file into a prepared dataset directory.

The directory is the contract every model and evaluation reads (see ``dataset.py``):
``meta.json``, ``items.parquet``, ``users.parquet``, ``histories.parquet``,
``split.parquet`` and ``negatives.parquet``. It is built in a temporary directory beside
``out_dir`` and renamed into place at the end, so an interrupted run never leaves a
directory that looks complete.

The steps hold integer codes in numpy arrays and polars columns, never a Python object per
row or per user: reading (``readers.read_encoded``), filtering, sorting and ids
(``histories.py``), the split (below) and the negatives (``negatives.py``). Each table is
built just before it is written, so a log of 100 million rows needs a few GiB.
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
from typing import Any, Literal, TypedDict

import numpy as np
import polars as pl

from mrif.data.dataset import FORMAT_VERSION
from mrif.data.histories import Histories, build_histories
from mrif.data.negatives import draw_eval_negatives, iter_eval_negatives
from mrif.data.readers import detect_format, read_encoded, source_sha256

__all__ = ["draw_eval_negatives", "prepare_dataset"]

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
        seed: seed of the evaluation negatives (see ``negatives.py``).
        n_eval_negatives: negatives per evaluated user, drawn without replacement (rule 9).
        name: dataset name for meta.json; defaults to the file name without suffixes.
        overwrite: replace a complete ``out_dir``.
        skip_bad_lines: drop bad lines (rows, for Parquet) instead of failing at the
            first; their count goes to meta.json (``source.n_bad_lines_skipped``).

    Note:
        Users are numbered 0.. by their first row in the file, items 1.. by first appearance
        in the sorted histories (rule 5). Users with fewer than 3 interactions stay train-only
        (CASES.md B15). Dedupe runs before k-core, so k-core then counts distinct pairs.
    """
    _check_options(k_core, seed, n_eval_negatives)
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    fmt = detect_format(source) if fmt is None else fmt

    encoded, skipped = read_encoded(
        source, fmt=fmt, skip_bad_lines=skip_bad_lines, keep_rating=False,
        **_column_kwargs(columns),
    )  # fmt: skip
    n_rows = encoded.n_rows
    histories = build_histories(encoded, k_core=k_core, dedupe=dedupe)
    if histories.items.size == 0:
        raise ValueError(f"k_core={k_core} removed every interaction of {source}")
    lengths = np.diff(histories.offsets)
    eval_users = np.flatnonzero(lengths >= MIN_EVAL_LENGTH).astype(np.int32)
    n_users, n_items = histories.n_users, histories.n_items

    meta: dict[str, Any] = {
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
            "sort": SORT_FILE_ORDER if histories.timestamps is None else SORT_BY_TIME,
        },
        "sampling_seed": seed,
        "n_eval_negatives": n_eval_negatives,
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": int(histories.items.size),
        "n_eval_users": int(eval_users.size),
        "n_train_only_users": n_users - int(eval_users.size),
        "n_short_negative_users": None,  # known once the negatives are drawn
        "split": SPLIT_RULE,
    }

    def write(tmp: Path) -> None:
        # Each table is built just before it is written, so that only one is held at a time.
        _id_table("item_id", histories.raw_items, 1).write_parquet(tmp / "items.parquet")
        _id_table("user_id", histories.raw_users, 0).write_parquet(tmp / "users.parquet")
        _histories_table(histories).write_parquet(tmp / "histories.parquet")
        _leave_one_out(histories.offsets, histories.items).write_parquet(tmp / "split.parquet")
        negatives, n_short = _negatives_table(histories, eval_users, n_eval_negatives, seed)
        negatives.write_parquet(tmp / "negatives.parquet")
        del negatives
        meta["n_short_negative_users"] = n_short
        # meta.json last: its presence marks a complete directory.
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    _write_atomically(out_dir, write, overwrite)
    n_short = meta["n_short_negative_users"]
    _warn_data_conditions(n_users, eval_users.size, n_short, n_eval_negatives)
    logger.info(
        "prepared %s: %d users (%d evaluated), %d items, %d interactions -> %s",
        meta["name"], n_users, eval_users.size, n_items, histories.items.size, out_dir,
    )  # fmt: skip
    return out_dir


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


def _id_table(id_column: str, raw_ids: pl.Series, first_id: int) -> pl.DataFrame:
    ids = pl.int_range(first_id, first_id + raw_ids.len(), dtype=pl.Int32, eager=True)
    raw_column = "raw_" + id_column.removesuffix("_id")
    return pl.DataFrame({id_column: ids, raw_column: raw_ids.cast(pl.String)})


def _histories_table(histories: Histories) -> pl.DataFrame:
    """One row per user: ``user_id``, ``items`` and ``timestamps`` lists (null without times)."""
    lengths = np.diff(histories.offsets)
    columns = {
        "user_id": np.repeat(np.arange(lengths.size, dtype=np.int32), lengths),
        "items": histories.items,
    }
    if histories.timestamps is not None:
        # Whole seconds travel as uint32; the dataset format stores them as Int64.
        times = histories.timestamps
        columns["timestamps"] = times.astype(np.int64) if times.dtype.kind == "u" else times
    rows = pl.DataFrame(columns).set_sorted("user_id")  # grouped by user already
    table = rows.group_by("user_id", maintain_order=True).agg(pl.exclude("user_id"))
    if histories.timestamps is None:
        table = table.with_columns(pl.lit(None, dtype=pl.List(pl.Int64)).alias("timestamps"))
    return table


def _negatives_table(
    histories: Histories, eval_users: np.ndarray, n_negatives: int, seed: int
) -> tuple[pl.DataFrame, int]:
    """``user_id`` and ``negatives`` (List(Int32)) of the evaluated users, and how many of
    them have a short pool; built block by block from ``iter_eval_negatives``."""
    blocks = iter_eval_negatives(
        histories.offsets, histories.items, eval_users, histories.n_items, n_negatives, seed
    )
    lists, n_short = [], 0
    for _, negatives, counts in blocks:
        n_short += int((counts < n_negatives).sum())
        # A 2-D numpy block would become a fixed-size Array: make it a list, cut to the counts.
        block = pl.DataFrame({"n": counts, "negatives": negatives})
        lists.append(block.select(pl.col("negatives").cast(pl.List(pl.Int32)).list.head("n")))
    table = pl.DataFrame({"user_id": pl.Series(eval_users, dtype=pl.Int32)})
    if lists:
        table = table.with_columns(pl.concat(lists, rechunk=False).to_series())
    else:
        table = table.with_columns(pl.Series("negatives", [], dtype=pl.List(pl.Int32)))
    return table, n_short


def _leave_one_out(offsets: np.ndarray, values: np.ndarray) -> pl.DataFrame:
    """Split table (rules 6-7): train length and valid/test targets, null for train-only."""
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
    return split.with_columns(
        pl.when(train_only).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("valid_target", "test_target")
    )


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
            try:
                os.replace(tmp, out_dir)
            except OSError as err:
                # Another writer filled out_dir between the two renames: keep theirs.
                message = f"out_dir {out_dir} appeared while preparing ({err})"
                raise FileExistsError(message) from None
            finally:
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
