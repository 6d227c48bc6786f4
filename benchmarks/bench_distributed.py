"""Time data-parallel training: one ``mrif train`` process against ``torchrun`` processes.

Run by hand (not part of the tests) and record the output in ``benchmarks/RESULTS.md``:

    python benchmarks/bench_distributed.py --data amazon-beauty --model sasrec \\
        --epochs 4 --processes 1 2 --out /tmp/bench-dp

Each setting trains the same model for exactly ``--epochs`` epochs (validated once, after the
last), with ``--threads`` torch threads in total: one process gets all of them, ``P``
processes get ``threads / P`` each. Reports training seconds per epoch and the validation and
test ndcg@10 the run selected (the runs differ: a step of ``P`` processes sees ``P`` batches).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path


def train_command(args: argparse.Namespace, processes: int, out: Path) -> list[str]:
    threads = max(1, args.threads // processes)
    mrif = [
        "-m", "mrif", "train", "--data", args.data, "--model", args.model, "--out", str(out),
        "--epochs", str(args.epochs), "--patience", str(args.epochs),
        "--valid-every", str(args.epochs), "--pretrain-epochs", str(args.epochs),
        "--seed", "0", "--threads", str(threads), "--quiet", "--overwrite",
    ]  # fmt: skip
    if processes == 1:
        return [sys.executable, *mrif]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    return [sys.executable, *launcher, *mrif]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="amazon-beauty")
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, required=True, help="directory for the runs")
    args = parser.parse_args()

    print(f"# {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads in all")
    print("| processes | threads each | epochs | train s / epoch | valid ndcg@10 | test ndcg@10 |")
    print("|---:|---:|---:|---:|---:|---:|", flush=True)
    for processes in args.processes:
        out = args.out / f"{args.model}-p{processes}"
        subprocess.run(train_command(args, processes, out), check=True, stdout=subprocess.DEVNULL)
        metrics = json.loads((out / "metrics.json").read_text())
        per_epoch = metrics["timing"]["train_seconds"] / metrics["epochs_run"]
        print(
            f"| {processes} | {max(1, args.threads // processes)} | {metrics['epochs_run']} | "
            f"{per_epoch:.1f} | {metrics['valid']['ndcg@10']:.4f} | "
            f"{metrics['test']['ndcg@10']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
