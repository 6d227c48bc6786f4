"""Preparation at scale: generate a synthetic interaction log, then time ``prepare_dataset``.

Run by hand (not part of the tests); ``--dir`` keeps the log for later runs:

    python benchmarks/bench_prepare.py --dir /tmp/bench-prepare [--rows 100000000] [--csv]

Target (issue 4, on the 2-core, 24 GiB development machine): a 100-million-row log prepared
with ``--k-core 5`` in under 10 minutes, with under 8 GiB peak RSS. Preparation runs in a
fresh child process that reports its own peak RSS (``getrusage``), so neither the generator
nor an earlier run counts.

The log (``log-<rows>.parquet``, with ``--csv`` also ``log-<rows>.csv``) has columns ``user``,
``item`` (string ids), ``timestamp`` (unix seconds) and ``rating`` (1.0 to 5.0), and is
written chunk by chunk: only the chunk and a few numbers per user are ever held. Its shape:

* users: history lengths from a log-normal with ``sigma`` 1.1 and mean ``--mean-length``
  (default 15; median about 8, a third of the users below 5 and a long tail);
* items: Zipf popularity with exponent ``--zipf`` (default 1.1) over ``--items`` items
  (default ``rows // 30``: 3.3 million at 100 million rows), ids shuffled so that popularity
  does not follow id order;
* order: each user's events spread at random over the whole file (every chunk takes a
  binomial share of each user's remaining events, then is shuffled), as in a log written in
  time order by many users at once;
* time: each user starts at a uniform moment of 2012-2021 and spreads their events over a
  uniform span of one day to three years, with exponential gaps floored to whole seconds
  (plus one in twenty gaps of zero), so a user's timestamps never decrease in file order and
  ties occur.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

_START_2012 = 1_325_376_000  # 2012-01-01T00:00:00Z
_TEN_YEARS = 10 * 365 * 86_400
_DAY, _THREE_YEARS = 86_400, 3 * 365 * 86_400
_LENGTH_SIGMA = 1.1
_TIE_SHARE = 0.05


def generate_log(
    directory: Path,
    rows: int,
    *,
    n_items: int | None = None,
    zipf: float = 1.1,
    mean_length: float = 15.0,
    seed: int = 0,
    chunk_rows: int = 2_000_000,
    csv: bool = False,
) -> Path:
    """Write the synthetic log described in the module docstring; return the Parquet path."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    n_items = n_items or max(1_000, rows // 30)

    lengths = _history_lengths(rng, rows, mean_length)
    remaining = lengths.copy()
    starts = _START_2012 + rng.integers(0, _TEN_YEARS, size=lengths.size)
    mean_gaps = rng.integers(_DAY, _THREE_YEARS, size=lengths.size) / lengths
    last_seen = starts.copy()  # the latest timestamp each user has written so far
    popularity = np.cumsum(1.0 / np.arange(1, n_items + 1) ** zipf)
    popularity /= popularity[-1]
    item_of_rank = rng.permutation(n_items)

    parts = directory / "parts"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir()
    n_chunks = max(1, -(-rows // chunk_rows))
    for chunk in range(n_chunks):
        # Each user gives this chunk a binomial share of the events they have left.
        share = 1.0 / (n_chunks - chunk)
        counts = remaining.copy() if chunk == n_chunks - 1 else rng.binomial(remaining, share)
        remaining -= counts
        users = np.repeat(np.arange(lengths.size), counts)
        rng.shuffle(users)
        times = _timestamps(rng, users, mean_gaps, last_seen)
        ranks = np.searchsorted(popularity, rng.random(users.size), side="right")
        items = item_of_rank[np.minimum(ranks, n_items - 1)]
        ratings = rng.integers(1, 6, size=users.size).astype(np.float64)
        _chunk_frame(users, items, times, ratings).write_parquet(
            parts / f"part-{chunk:05d}.parquet"
        )

    log = directory / f"log-{rows}.parquet"
    pl.scan_parquet(sorted(parts.glob("*.parquet"))).sink_parquet(log)
    shutil.rmtree(parts)
    if csv:
        pl.scan_parquet(log).sink_csv(log.with_suffix(".csv"))
    return log


def _history_lengths(rng: np.random.Generator, rows: int, mean_length: float) -> np.ndarray:
    """Log-normal lengths (at least 1) summing to exactly ``rows``."""
    mu = np.log(mean_length) - _LENGTH_SIGMA**2 / 2
    drawn: list[np.ndarray] = []
    total = 0
    while total < rows:
        batch = np.maximum(1, np.rint(rng.lognormal(mu, _LENGTH_SIGMA, rows // 10 + 100)))
        drawn.append(batch.astype(np.int64))
        total += int(drawn[-1].sum())
    lengths = np.concatenate(drawn)
    ends = np.cumsum(lengths)
    last = int(np.searchsorted(ends, rows))  # the user whose history crosses ``rows``
    lengths = lengths[: last + 1]
    lengths[-1] -= int(ends[last]) - rows
    return lengths


def _timestamps(
    rng: np.random.Generator, users: np.ndarray, mean_gaps: np.ndarray, last_seen: np.ndarray
) -> np.ndarray:
    """Timestamps of a chunk's rows, non-decreasing per user in row order; updates
    ``last_seen``."""
    gaps = np.floor(rng.exponential(mean_gaps[users]))
    gaps[rng.random(users.size) < _TIE_SHARE] = 0
    order = np.argsort(users, kind="stable")  # rows of each user, in chunk order
    grouped = users[order]
    sums = np.cumsum(gaps[order])
    group_start = np.r_[True, grouped[1:] != grouped[:-1]]
    before_group = np.maximum.accumulate(np.where(group_start, sums - gaps[order], 0))
    times = np.empty(users.size, dtype=np.int64)
    times[order] = last_seen[grouped] + (sums - before_group).astype(np.int64)
    np.maximum.at(last_seen, users, times)
    return times


def _chunk_frame(
    users: np.ndarray, items: np.ndarray, times: np.ndarray, ratings: np.ndarray
) -> pl.DataFrame:
    # Odd multipliers modulo a power of two are bijections: distinct numbers stay distinct
    # ids, which look random rather than dense.
    user_numbers = (users.astype(np.uint64) * np.uint64(2_654_435_761)) % np.uint64(1 << 40)
    frame = pl.DataFrame({"u": user_numbers, "i": items, "timestamp": times, "rating": ratings})
    return frame.select(
        pl.format("U{}", "u").alias("user"),
        pl.format("B{}", pl.col("i").cast(pl.String).str.zfill(9)).alias("item"),
        "timestamp",
        "rating",
    )


def _prepare_child(log: str, out: str, k_core: int, result_path: str) -> None:
    """Runs in a fresh process: prepare ``log``; record the wall time and the peak RSS."""
    import warnings

    from mrif.data.prepare import prepare_dataset

    warnings.simplefilter("ignore")  # train-only and short-pool warnings are expected
    started = time.perf_counter()
    prepare_dataset(log, out, k_core=k_core, overwrite=True)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    Path(result_path).write_text(json.dumps({"seconds": seconds, "peak_kib": peak_kib}))


def run_benchmark(log: Path, out: Path, *, k_core: int = 5) -> dict[str, Any]:
    """Prepare ``log`` into ``out`` in a child process: wall time, peak RSS, resulting counts."""
    result_path = out.parent / f"{out.name}.result.json"
    context = multiprocessing.get_context("spawn")
    arguments = (str(log), str(out), k_core, str(result_path))
    child = context.Process(target=_prepare_child, args=arguments)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"preparation failed (exit code {child.exitcode})")
    measured = json.loads(result_path.read_text())
    result_path.unlink()
    meta = json.loads((out / "meta.json").read_text())
    return {
        "log": str(log),
        "format": log.suffix.removeprefix("."),
        "log_bytes": log.stat().st_size,
        "rows": meta["source"]["n_rows"],
        "k_core": k_core,
        "prepare_seconds": round(measured["seconds"], 2),
        "peak_rss_gib": round(measured["peak_kib"] / 2**20, 3),
        "n_users": meta["n_users"],
        "n_items": meta["n_items"],
        "n_interactions": meta["n_interactions"],
        "n_eval_users": meta["n_eval_users"],
    }


def report(result: dict[str, Any]) -> str:
    """A few lines of text and one JSON line."""
    lines = [
        f"log: {result['log']} ({result['format']}, {result['log_bytes'] / 2**30:.2f} GiB, "
        f"{result['rows']:,} rows)",
        f"prepare --k-core {result['k_core']}: {result['prepare_seconds']:.1f} s wall, "
        f"peak RSS {result['peak_rss_gib']:.2f} GiB",
        f"result: {result['n_users']:,} users ({result['n_eval_users']:,} evaluated), "
        f"{result['n_items']:,} items, {result['n_interactions']:,} interactions",
        json.dumps(result),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the log and output go")
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--items", type=int, help="catalogue size (default rows // 30)")
    parser.add_argument("--zipf", type=float, default=1.1, help="item popularity exponent")
    parser.add_argument("--mean-length", type=float, default=15.0, help="mean history length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-rows", type=int, default=2_000_000)
    parser.add_argument("--csv", action="store_true", help="also write and prepare a CSV copy")
    parser.add_argument("--k-core", type=int, default=5)
    parser.add_argument("--regenerate", action="store_true", help="ignore an existing log")
    args = parser.parse_args(argv)

    log = args.dir / f"log-{args.rows}.parquet"
    started = time.perf_counter()
    if args.regenerate or not log.is_file() or (args.csv and not log.with_suffix(".csv").is_file()):
        log = generate_log(
            args.dir, args.rows, n_items=args.items, zipf=args.zipf,
            mean_length=args.mean_length, seed=args.seed, chunk_rows=args.chunk_rows,
            csv=args.csv,
        )  # fmt: skip
        print(f"generated {log} in {time.perf_counter() - started:.1f} s", flush=True)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, polars "
          f"{pl.__version__}, numpy {np.__version__}", flush=True)  # fmt: skip

    logs = [log, log.with_suffix(".csv")] if args.csv else [log]
    for source in logs:
        out = args.dir / f"prepared-{source.suffix.removeprefix('.')}"
        print(report(run_benchmark(source, out, k_core=args.k_core)), flush=True)
        shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
