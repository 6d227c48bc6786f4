"""Speed and memory on Amazon Beauty: training epochs, scoring under both protocols, peak RSS.

Run by hand (not part of the tests) and record the output in ``benchmarks/RESULTS.md``:

    MRIF_DATA_MIRROR=/path/to/mirror python benchmarks/bench_beauty.py [--epochs 2]

Targets (issue 2, on a 2-core CPU): one MRIF-attn training epoch <= 20 s, scoring all Beauty
users under the sampled protocol <= 5 s, peak memory <= 2 GiB. A training epoch here is the
pass over every training step only; validation is timed as its own row.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch

from mrif.config import ModelConfig, TrainConfig
from mrif.data.dataset import PreparedDataset
from mrif.data.registry import resolve_dataset
from mrif.evaluation import full_ranks, score_sampled
from mrif.models import MRIF, build_model
from mrif.training import make_optimizer, seed_everything, train_epoch, training_inputs


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_model(name: str, dataset: PreparedDataset, epochs: int, device: str) -> dict:
    seed_everything(0)
    train = TrainConfig(device=device)
    model = build_model(name, dataset.n_items, ModelConfig(), dataset.n_users).to(device)
    if isinstance(model, MRIF):  # timing only: an untrained extractor costs the same
        model.load_pretrained_extractor(model.encoder.state_dict())
    examples, sampler = training_inputs(dataset, model.config.max_len, device)
    optimizer = make_optimizer(model, train.lr or model.default_lr)
    generator = torch.Generator(device=device).manual_seed(0)
    rng = np.random.default_rng(0)

    epoch_seconds = [
        timed(
            lambda: train_epoch(
                model, examples.batches(train.batch_size, rng), sampler, optimizer, generator
            )
        )
        for _ in range(epochs)
    ]
    batch = train.eval_batch_size
    return {
        "model": name,
        "train_epoch_s": round(float(np.median(epoch_seconds)), 2),
        "valid_sampled_s": round(
            timed(lambda: score_sampled(model, dataset, "valid", batch_size=batch, device=device)),
            2,
        ),
        "test_sampled_s": round(
            timed(lambda: score_sampled(model, dataset, "test", batch_size=batch, device=device)),
            2,
        ),
        "test_full_s": round(
            timed(
                lambda: full_ranks(
                    model,
                    dataset,
                    "test",
                    batch_size=batch // 2,
                    item_chunk=train.item_chunk,
                    device=device,
                )  # fmt: skip
            ),
            2,
        ),
        "peak_rss_mib": round(peak_rss_mib()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="amazon-beauty")
    parser.add_argument("--models", default="sasrec,mrif-attn")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (median reported)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    dataset = PreparedDataset.load(resolve_dataset(args.data))
    print(f"# {args.data}: {dataset.n_users} users, {dataset.n_items} items")
    print(
        f"# {platform.machine()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, device {args.device}"
    )
    print("| model | train epoch (s) | valid, sampled (s) | test, sampled (s) | test, full (s) |"
          " peak RSS (MiB) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|", flush=True)
    columns = ("model", "train_epoch_s", "valid_sampled_s", "test_sampled_s", "test_full_s",
               "peak_rss_mib")  # fmt: skip
    rows = []
    for name in args.models.split(","):
        rows.append(bench_model(name, dataset, args.epochs, args.device))
        print("| " + " | ".join(str(rows[-1][c]) for c in columns) + " |", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
