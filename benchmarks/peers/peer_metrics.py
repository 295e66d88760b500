"""Clustering scores against an annotation: ARI, NMI, Hungarian accuracy and macro F1 after matching.

Only numpy, scipy and scikit-learn are imported, so the same file runs in the peers' virtual environment and
in the project's one. Labels are compared as strings; spots whose truth is missing must be dropped by the
caller before scoring (``score`` does it when given ``None``/NaN truth values).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score


def _as_str(labels) -> np.ndarray:
    return np.asarray(pd.Series(list(labels), dtype=object).astype(str))


def match_labels(truth, pred) -> dict[str, str]:
    """Map each predicted label to one truth label by maximum overlap (Hungarian assignment).

    Predicted labels left over when there are more clusters than classes are mapped to ``""`` (never a truth
    label, so they count as errors).
    """
    truth = _as_str(truth)
    pred = _as_str(pred)
    t_cats, t_idx = np.unique(truth, return_inverse=True)
    p_cats, p_idx = np.unique(pred, return_inverse=True)
    cont = np.zeros((p_cats.size, t_cats.size), dtype=np.int64)
    np.add.at(cont, (p_idx, t_idx), 1)
    rows, cols = linear_sum_assignment(-cont)
    mapping = {str(p): "" for p in p_cats}
    for r, c in zip(rows, cols, strict=True):
        mapping[str(p_cats[r])] = str(t_cats[c])
    return mapping


def score(truth, pred) -> dict[str, float | int]:
    """ARI, NMI (arithmetic), Hungarian ACC and macro F1 over the truth classes after matching."""
    truth = pd.Series(list(truth), dtype=object)
    pred = pd.Series(list(pred), dtype=object)
    if len(truth) != len(pred):
        raise ValueError(f"truth has {len(truth)} labels but pred has {len(pred)}; they must align")
    keep = truth.notna().to_numpy() & (truth.astype(str).str.len() > 0).to_numpy()
    keep &= ~truth.astype(str).isin(["nan", "NA", "None"]).to_numpy()
    t = _as_str(truth[keep])
    p = _as_str(pred[keep])
    mapping = match_labels(t, p)
    mapped = np.array([mapping[x] for x in p], dtype=object)
    classes = np.unique(t)
    return {
        "ari": float(adjusted_rand_score(t, p)),
        "nmi": float(normalized_mutual_info_score(t, p)),
        "acc": float(np.mean(mapped == t)),
        "f1": float(f1_score(t, mapped, labels=classes, average="macro", zero_division=0)),
        "n_scored": int(keep.sum()),
        "n_clusters_found": int(np.unique(p).size),
    }
