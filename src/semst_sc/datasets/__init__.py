"""Data: the bundled demo slice, readers for data on disk, and a registry of public downloads."""

from __future__ import annotations

from ._demo import DEMO_ANNOTATION, demo
from ._readers import read_h5ad, read_visium
from ._registry import DATASETS, DatasetInfo, default_data_dir, fetch

__all__ = [
    "DATASETS",
    "DEMO_ANNOTATION",
    "DatasetInfo",
    "default_data_dir",
    "demo",
    "fetch",
    "read_h5ad",
    "read_visium",
]
