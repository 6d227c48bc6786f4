"""Popularity ranking on the validation and the test target: how much harder is the test?

    MRIF_DATA_MIRROR=/path/to/mirror python benchmarks/pop_by_split.py [--data amazon-beauty]

Counts come either from the training items only (what every model may see) or from every
interaction, test targets included (a leak, shown only to compare with published tables). Ties
between equally popular items are broken by a fixed tiny random offset.
"""

from __future__ import annotations

import argparse

import numpy as np

from mrif.data.dataset import PreparedDataset
from mrif.data.registry import resolve_dataset
from mrif.metrics import sampled_metrics


def popularity(dataset: PreparedDataset, keep_last: int) -> np.ndarray:
    """Item counts over each user's history without its last ``keep_last`` items."""
    counts = np.zeros(dataset.n_items + 1)
    for user in range(dataset.n_users):
        history = dataset.history(user)
        np.add.at(counts, history[: len(history) - keep_last], 1)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="amazon-beauty")
    args = parser.parse_args()
    dataset = PreparedDataset.load(resolve_dataset(args.data))
    mask = np.arange(dataset.negatives.shape[1])[None, :] < dataset.n_negatives[:, None]
    tie_break = np.random.default_rng(0).random(dataset.n_items + 1) * 1e-3
    rows = [
        ("training items", "valid", popularity(dataset, 2), dataset.valid_targets),
        ("training items", "test", popularity(dataset, 2), dataset.test_targets),
        ("all interactions (leaks)", "test", popularity(dataset, 0), dataset.test_targets),
    ]
    print("| counts from | target | hit@10 | ndcg@10 |")
    print("|---|---|---:|---:|")
    for source, split, counts, targets in rows:
        scores = counts + tie_break
        result = sampled_metrics(scores[targets], scores[dataset.negatives], mask).metrics
        print(f"| {source} | {split} | {result['hit@10']:.4f} | {result['ndcg@10']:.4f} |")


if __name__ == "__main__":
    main()
