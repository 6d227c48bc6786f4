"""Data layer: raw readers, k-core, dataset preparation, the prepared-dataset loader, registry."""

from mrif.data.dataset import PreparedDataset
from mrif.data.kcore import kcore_filter
from mrif.data.prepare import prepare_dataset
from mrif.data.readers import DataFormatError, read_interactions
from mrif.data.registry import REGISTRY, resolve_dataset, resolve_source

__all__ = [
    "REGISTRY",
    "DataFormatError",
    "PreparedDataset",
    "kcore_filter",
    "prepare_dataset",
    "read_interactions",
    "resolve_dataset",
    "resolve_source",
]
