"""Clustering scores against an annotation: ARI, NMI, ACC and macro F1 after Hungarian matching.

Pure functions on label arrays (any hashable labels; they are compared as strings). No AnnData, no torch.
ACC and F1 first match every predicted cluster to at most one annotated label so that the number of
spots on matched pairs is largest (:func:`scipy.optimize.linear_sum_assignment`). When there are more
clusters than labels the clusters left without a label count as wrong; when there are fewer, the labels
left without a cluster are never predicted.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score

__all__ = ["acc", "ari", "contingency", "f1_macro", "match_labels", "nmi", "scores"]


def _as_labels(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(truth, dtype=object)
    p = np.asarray(pred, dtype=object)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shapes {t.shape} and {p.shape}.")
    if t.shape != p.shape:
        raise ValueError(f"truth and pred must have the same length, got {t.size} and {p.size}.")
    if t.size == 0:
        raise ValueError("no labelled spots to score.")
    return t.astype(str), p.astype(str)


def contingency(
    truth: Sequence[Hashable], pred: Sequence[Hashable]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of spots per (cluster, label) pair.

    Returns
    -------
    ``(table, clusters, labels)``: ``table[i, j]`` is the number of spots in cluster ``clusters[i]`` with
    label ``labels[j]``; both name arrays are sorted strings.
    """
    t, p = _as_labels(truth, pred)
    labels, t_idx = np.unique(t, return_inverse=True)
    clusters, p_idx = np.unique(p, return_inverse=True)
    table = np.zeros((clusters.size, labels.size), dtype=np.int64)
    np.add.at(table, (p_idx, t_idx), 1)
    return table, clusters, labels


def match_labels(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> dict[str, str | None]:
    """Hungarian matching of predicted clusters to annotated labels.

    Parameters
    ----------
    truth
        Annotated label of every spot.
    pred
        Predicted cluster of every spot.

    Returns
    -------
    ``{cluster: label}`` for every predicted cluster (as strings); ``None`` for clusters left without a
    label because there are more clusters than labels.
    """
    table, clusters, labels = contingency(truth, pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping: dict[str, str | None] = {str(c): None for c in clusters}
    for r, c in zip(rows, cols, strict=True):
        mapping[str(clusters[r])] = str(labels[c])
    return mapping


def _relabel(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Truth as strings, and every prediction replaced by its matched label (unmatched: a label no truth has)."""
    t, p = _as_labels(truth, pred)
    mapping = match_labels(t, p)
    unmatched = "\x00unmatched"  # cannot collide with a real label
    mapped = np.array([mapping[x] if mapping[x] is not None else unmatched for x in p], dtype=object)
    return t, mapped.astype(str)


def ari(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """Adjusted Rand index (:func:`sklearn.metrics.adjusted_rand_score`)."""
    t, p = _as_labels(truth, pred)
    return float(adjusted_rand_score(t, p))


def nmi(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """Normalised mutual information, arithmetic mean (:func:`sklearn.metrics.normalized_mutual_info_score`)."""
    t, p = _as_labels(truth, pred)
    return float(normalized_mutual_info_score(t, p))


def acc(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """Accuracy after Hungarian matching: share of spots whose cluster is matched to their label."""
    table, _, _ = contingency(truth, pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def f1_macro(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """Macro F1 over the annotated labels after Hungarian matching.

    Each label's F1 uses the spots predicted as its matched cluster; spots in unmatched clusters are false
    negatives of their label; a label without a cluster scores 0. The mean is over the annotated labels.
    """
    t, mapped = _relabel(truth, pred)
    labels = np.unique(t)
    return float(f1_score(t, mapped, labels=labels, average="macro", zero_division=0))


def scores(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> dict[str, float]:
    """All four scores: ``{'ari', 'nmi', 'acc', 'f1_macro'}``."""
    return {
        "ari": ari(truth, pred),
        "nmi": nmi(truth, pred),
        "acc": acc(truth, pred),
        "f1_macro": f1_macro(truth, pred),
    }
