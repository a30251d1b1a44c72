"""Per-task datasets: grouped, stratified splits with the task's static prefix,
versioned and content-hashed."""

from __future__ import annotations

from protege.datasets.build import (
    Dataset,
    DatasetConfig,
    build_dataset,
    dataset_versions,
    detect_output_type,
    list_datasets,
    load_dataset,
    read_jsonl,
    trace_to_row,
)
from protege.datasets.prefix import detect_prefix
from protege.datasets.split import stratified_group_split

__all__ = [
    "Dataset",
    "DatasetConfig",
    "build_dataset",
    "dataset_versions",
    "detect_output_type",
    "detect_prefix",
    "list_datasets",
    "load_dataset",
    "read_jsonl",
    "stratified_group_split",
    "trace_to_row",
]
