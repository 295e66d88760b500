from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from semst_sc.tl._cluster import (
    _relabel_by_size,
    cluster_embedding,
    estimate_n_domains,
    smooth_labels,
)


def _blobs(n_per=80, k=4, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(k, d))
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres])
    y = np.repeat(np.arange(k), n_per)
    return x, y


@pytest.mark.parametrize("method", ["gmm", "kmeans", "leiden"])
def test_cluster_recovers_separated_blobs_with_exact_k(method):
    x, y = _blobs()
    labels, _ = cluster_embedding(x, 4, method=method, seed=0)
    assert np.unique(labels).size == 4
    assert adjusted_rand_score(y, labels) > 0.95


@pytest.mark.parametrize("method", ["gmm", "kmeans", "leiden"])
def test_cluster_is_deterministic(method):
    x, _ = _blobs(k=5, seed=3)
    a, _ = cluster_embedding(x, 5, method=method, seed=7)
    b, _ = cluster_embedding(x, 5, method=method, seed=7)
    np.testing.assert_array_equal(a, b)


def test_leiden_lands_on_requested_k_even_when_blobs_disagree():
    # 3 true blobs but 6 requested: the resolution search (or the merge fallback) must give exactly 6.
    x, _ = _blobs(k=3, n_per=100)
    labels, info = cluster_embedding(x, 6, method="leiden", seed=0)
    assert np.unique(labels).size == 6
    assert "resolution" in info


def test_unknown_method_lists_valid_options():
    x, _ = _blobs()
    with pytest.raises(ValueError, match=r"gmm.*kmeans.*leiden"):
        cluster_embedding(x, 4, method="mclust")


def test_relabel_by_size_orders_largest_first():
    labels = np.array([2, 2, 2, 0, 1, 1])
    np.testing.assert_array_equal(_relabel_by_size(labels), [0, 0, 0, 2, 1, 1])


def test_estimate_n_domains_finds_blob_count():
    x, _ = _blobs(k=4, n_per=60)
    sel = estimate_n_domains(x, k_range=(2, 8), method="kmeans", seed=0)
    assert sel.chosen == 4
    assert sel.n_domains.tolist() == list(range(2, 9))
    assert sel.score.shape == (7,)
    assert sel.criterion == "silhouette"


def test_estimate_n_domains_rejects_bad_range():
    x, _ = _blobs()
    with pytest.raises(ValueError, match="k_range"):
        estimate_n_domains(x, k_range=(1, 5))


def test_smooth_labels_never_erases_a_domain():
    # a chain of 6 spots; label 2 is a single spot whose two neighbours both vote 0
    a = sp.diags([np.ones(5), np.ones(5)], [-1, 1], shape=(6, 6)).tocsr()
    labels = np.array([0, 0, 2, 0, 1, 1])
    out = smooth_labels(labels, a)
    assert set(out) == {0, 1, 2}
    np.testing.assert_array_equal(out, labels)


def test_smooth_labels_majority_over_neighbours():
    # a path graph 0-1-...-6; spot 2 is an isolated label inside a run of zeros (label 1 lives on at 5-6)
    a = sp.diags([np.ones(6), np.ones(6)], [-1, 1], shape=(7, 7)).tocsr()
    labels = np.array([0, 0, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(smooth_labels(labels, a), [0, 0, 0, 0, 0, 1, 1])
    # a tie (one neighbour each way) keeps the spot's own label
    a = sp.diags([np.ones(4), np.ones(4)], [-1, 1], shape=(5, 5)).tocsr()
    labels = np.array([0, 1, 1, 0, 0])
    out = smooth_labels(labels, a)
    assert out[1] == 1 and out[2] == 1
