"""Graphs: the spatial neighbour graph (through squidpy) and the expression kNN graph, sparse only."""

from __future__ import annotations

from ._feature import cosine_knn_graph, feature_graph, knn_indices
from ._spatial import adaptive_threshold, median_nn_distance, spatial_graph, spatial_graph_arrays

__all__ = [
    "adaptive_threshold",
    "cosine_knn_graph",
    "feature_graph",
    "knn_indices",
    "median_nn_distance",
    "spatial_graph",
    "spatial_graph_arrays",
]
