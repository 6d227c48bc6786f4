"""Two CPU kernels that set the pace of a training or scoring step, against torch's defaults.

Run by hand (not part of the tests) and record the output in ``benchmarks/RESULTS.md``:

    python benchmarks/bench_kernels.py [--threads 1]

- dropout, forward and backward: ``F.dropout`` (a ``bernoulli_`` mask) against
  ``mrif.models.layers.dropout`` (a ``torch.rand`` mask), on a SASRec-sized activation;
- MRIF's fusion softmax over the history for 101 candidates per user, with the history
  along the last axis (``(B, C, L)``) or before the candidates (``(B, L, C)``, what
  ``MRIF.candidate_scores`` uses), for history lengths typical of Amazon data.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mrif.models.layers import dropout


def microseconds(action: Callable[[], object], repeats: int) -> float:
    """Median time of one call, after one warm-up call."""
    action()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2] * 1e6


def bench_dropout(repeats: int) -> dict[str, float]:
    x = torch.randn(128, 20, 64, requires_grad=True)
    return {
        "F.dropout": microseconds(lambda: F.dropout(x, 0.5, True).sum().backward(), repeats),
        "mrif dropout": microseconds(lambda: dropout(x, 0.5, True).sum().backward(), repeats),
    }


def bench_fusion_softmax(repeats: int) -> list[dict[str, float]]:
    rows = []
    for length in (5, 10, 20, 50):
        last = torch.randn(512, 101, length)
        before = torch.randn(512, length, 101)
        rows.append(
            {
                "history length": length,
                "(B, C, L) softmax over L": microseconds(
                    lambda last=last: torch.softmax(last, 2), repeats
                ),
                "(B, L, C) softmax over L": microseconds(
                    lambda before=before: torch.softmax(before, 1), repeats
                ),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {
        "torch": torch.__version__,
        "threads": args.threads,
        "dropout (128, 20, 64), forward + backward, us": bench_dropout(args.repeats),
        "fusion softmax, 512 users x 101 candidates, us": bench_fusion_softmax(args.repeats),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
