"""Data layer: raw readers, k-core, dataset preparation, the prepared-dataset loader, registry."""

from mrif.data.checks import DataFormatError, SkippedLines
from mrif.data.dataset import PreparedDataset
from mrif.data.kcore import kcore_filter
from mrif.data.prepare import prepare_dataset
from mrif.data.readers import read_interactions, read_interactions_with_skips
from mrif.data.registry import REGISTRY, prepare_registered, resolve_dataset, resolve_source
from mrif.data.stats import dataset_stats

__all__ = [
    "REGISTRY",
    "DataFormatError",
    "PreparedDataset",
    "SkippedLines",
    "dataset_stats",
    "kcore_filter",
    "prepare_dataset",
    "prepare_registered",
    "read_interactions",
    "read_interactions_with_skips",
    "resolve_dataset",
    "resolve_source",
]
