"""Time ``mrif recommend --all-users``: top-k lists for every user of a trained run.

Run by hand (not part of the tests) on finished run directories, and record the output in
``benchmarks/RESULTS.md``:

    python benchmarks/bench_recommend.py RUN_DIR [RUN_DIR ...] [--k 10] [--threads 1]

Reports the seconds to load the run and to rank every item for every user (seen items left
out), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from pathlib import Path

import torch

from mrif.recommend import load_recommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"# {platform.machine()}, {args.threads} torch thread(s), torch {torch.__version__}")
    print("| run | users | items | load (s) | top-k, all users (s) | users / s | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|", flush=True)
    for run in args.runs:
        started = time.perf_counter()
        recommender = load_recommender(run)
        torch.set_num_threads(args.threads)  # loading a run applies its recorded threads
        loaded = time.perf_counter()
        recommendations = recommender.for_users(None, k=args.k)
        ranked = time.perf_counter() - loaded
        n_users = len(recommendations.users)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"| {run.name} | {n_users} | {recommender.dataset.n_items} | "
            f"{loaded - started:.1f} | {ranked:.1f} | {n_users / ranked:.0f} | {peak_mib:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
