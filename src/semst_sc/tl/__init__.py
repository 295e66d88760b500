"""Tools: semantic embedding, spatial domains, clustering and evaluation."""

from __future__ import annotations

from ._cluster import cluster_embedding, estimate_n_domains, smooth_embedding, smooth_labels
from ._domains import domains
from ._evaluate import evaluate
from ._recluster import recluster
from ._semantic import semantic_embedding
from ._semst import SemST

__all__ = [
    "SemST",
    "cluster_embedding",
    "domains",
    "estimate_n_domains",
    "evaluate",
    "recluster",
    "semantic_embedding",
    "smooth_embedding",
    "smooth_labels",
]
