from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score, silhouette_score

from semst_sc.tl._cluster import (
    _reduce,
    _relabel_by_size,
    cluster_embedding,
    estimate_n_domains,
    smooth_embedding,
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


def test_smooth_labels_tie_between_other_labels_goes_to_the_lowest_and_duplicates_vote_once():
    # spot 0 (label 2) has neighbours labelled 1, 1, 0, 0: labels 0 and 1 tie at 2 votes against its own 1.5
    labels = np.array([2, 1, 1, 0, 0, 2, 2])  # spots 5-6 keep label 2 alive
    rows, cols = [0, 0, 0, 0, 5], [1, 2, 3, 4, 6]
    a = sp.csr_matrix((np.ones(5), (rows, cols)), shape=(7, 7))
    a = (a + a.T).tocsr()
    assert smooth_labels(labels, a)[0] == 0
    # the same graph stored with a duplicate edge 0-1 (non-canonical CSR) gives the same vote
    dup = sp.csr_matrix(
        (np.ones(a.nnz + 1), np.r_[a.indices[:1], a.indices], np.r_[0, a.indptr[1:] + 1]), shape=(7, 7)
    )
    assert not dup.has_canonical_format and dup.nnz == a.nnz + 1
    before = (dup.indptr.copy(), dup.indices.copy(), dup.data.copy())
    np.testing.assert_array_equal(smooth_labels(labels, dup), smooth_labels(labels, a))
    for kept, was in zip((dup.indptr, dup.indices, dup.data), before, strict=True):
        np.testing.assert_array_equal(kept, was)  # the caller's graph is untouched


def test_pca_scores_match_a_full_svd():
    from sklearn.decomposition import PCA

    x, _ = _blobs(n_per=200, k=5, d=30, seed=3)
    ours = _reduce(x, 8, "euclidean")
    ref = PCA(n_components=8, svd_solver="full").fit_transform(x)
    np.testing.assert_allclose(ours, ref, atol=1e-9)  # the same axes, signs included
    assert _reduce(x, None, "euclidean").shape == x.shape  # no PCA: centred only


def test_smooth_embedding_is_repeated_neighbourhood_mean():
    # two components: a path 0-1-2 and an edge 3-4; spot 5 has no neighbour; weights are ignored
    a = sp.csr_matrix(
        (np.array([2.0, 2.0, 0.5, 0.5, 3.0, 3.0]), ([0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3])), shape=(6, 6)
    )
    x = np.arange(12, dtype=np.float32).reshape(6, 2) ** 2
    before = x.copy()
    dense = (a.toarray() != 0) + np.eye(6)
    s = dense / dense.sum(1, keepdims=True)
    np.testing.assert_allclose(smooth_embedding(x, a, 1), s @ x)
    np.testing.assert_allclose(smooth_embedding(x, a, 3), s @ s @ s @ x)
    out = smooth_embedding(x, a, 2)
    np.testing.assert_array_equal(x, before)  # input untouched
    assert out.dtype == np.float64 and out.shape == x.shape
    np.testing.assert_array_equal(out[5], x[5])  # isolated spot keeps its row
    # no mixing across components: the edge 3-4 averages to its own mean
    np.testing.assert_allclose(out[3], x[3:5].mean(0))
    np.testing.assert_allclose(smooth_embedding(x, a, 0), x)
    # a stored self-loop does not count twice
    np.testing.assert_allclose(smooth_embedding(x, a + sp.identity(6, format="csr"), 1), s @ x)


def test_smooth_embedding_rejects_bad_arguments():
    a = sp.identity(4, format="csr")
    x = np.zeros((4, 3))
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n_hops must be a non-negative integer"):
            smooth_embedding(x, a, bad)
    with pytest.raises(ValueError, match="adjacency has shape"):
        smooth_embedding(np.zeros((5, 3)), a, 1)
    with pytest.raises(ValueError, match="2-D"):
        smooth_embedding(np.zeros(4), a, 1)


def test_smooth_embedding_separates_noisy_neighbourhoods():
    # two halves of a line of spots with means 0 and 1 buried in noise: averaging over the spatial graph
    # makes them separable by a Gaussian mixture (euclidean: the halves differ by position, not direction)
    rng = np.random.default_rng(0)
    n = 400
    a = sp.diags([np.ones(n - 1), np.ones(n - 1), np.ones(n - 2), np.ones(n - 2)], [-1, 1, -2, 2]).tocsr()
    truth = (np.arange(n) >= n // 2).astype(int)
    x = truth[:, None] + rng.normal(scale=1.5, size=(n, 2))
    raw, _ = cluster_embedding(x, 2, metric="euclidean", n_pcs=None, seed=0)
    smoothed, _ = cluster_embedding(smooth_embedding(x, a, 3), 2, metric="euclidean", n_pcs=None, seed=0)
    assert adjusted_rand_score(truth, raw) < 0.3
    assert adjusted_rand_score(truth, smoothed) > 0.6


def _rays(n_per=100, k=3, d=8, seed=0):
    """k nearby directions; along each, spots at lengths spread over a factor of 20 (as embeddings of spots
    whose depth differs). Their direction is the group, their length is noise."""
    rng = np.random.default_rng(seed)
    dirs = np.ones((k, d)) + 0.4 * rng.normal(size=(k, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    lengths = rng.uniform(0.5, 10.0, size=(k * n_per, 1))
    x = np.repeat(dirs, n_per, axis=0) * lengths + rng.normal(scale=0.02, size=(k * n_per, d)) * lengths
    return x, np.repeat(np.arange(k), n_per)


@pytest.mark.parametrize("method", ["gmm", "kmeans"])
def test_cosine_metric_groups_by_direction_not_length(method):
    x, y = _rays()
    cos, _ = cluster_embedding(x, 3, method=method, seed=0)  # cosine: the default
    euc, _ = cluster_embedding(x, 3, method=method, metric="euclidean", seed=0)
    assert adjusted_rand_score(y, cos) > 0.95
    assert adjusted_rand_score(y, euc) < 0.8  # as learned, the lengths split the rays
    # the same as clustering the unit rows by hand, and the input is not changed
    before = x.copy()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(
        cluster_embedding(unit, 3, method=method, metric="euclidean", seed=0)[0], cos
    )
    np.testing.assert_array_equal(x, before)


def test_cosine_metric_keeps_zero_rows_finite():
    x, _ = _rays(n_per=40)
    x[:5] = 0.0
    labels, _ = cluster_embedding(x, 3, metric="cosine", seed=0)
    assert labels.shape == (x.shape[0],) and np.unique(labels).size == 3


def test_estimate_n_domains_in_cosine_geometry():
    x, _ = _rays(k=4, n_per=60)
    sel = estimate_n_domains(x, k_range=(2, 6), method="kmeans", metric="cosine", seed=0)
    assert sel.chosen == 4


def test_unknown_metric_lists_valid_options():
    x, _ = _blobs()
    with pytest.raises(ValueError, match=r"metric='manhattan'.*'euclidean'.*'cosine'"):
        cluster_embedding(x, 4, metric="manhattan")
    with pytest.raises(ValueError, match=r"'euclidean'.*'cosine'"):
        estimate_n_domains(x, k_range=(2, 4), metric="l2")


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_estimate_n_domains_scores_the_clusterings_of_its_metric(metric):
    # each candidate's silhouette is that of cluster_embedding with the same metric (under 3000 spots the
    # subsample is every spot), measured on the rows in that geometry
    x, _ = _rays(n_per=60)
    sel = estimate_n_domains(x, k_range=(2, 5), metric=metric, n_pcs=None, seed=0)
    rows = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
    rows = rows - rows.mean(axis=0)
    want = [
        silhouette_score(rows, cluster_embedding(x, k, metric=metric, n_pcs=None, seed=0)[0])
        for k in range(2, 6)
    ]
    np.testing.assert_allclose(sel.score, want, rtol=1e-9)


def test_smooth_labels_and_embedding_refuse_what_they_cannot_vote_on():
    a = sp.csr_matrix(np.ones((3, 3)))
    with pytest.raises(TypeError, match=r"cat\.codes"):
        smooth_labels(pd.Series(pd.Categorical(["1", "2", "1"])), a)
    for bad in (np.array(["1", "2", "1"]), np.array([0.0, 1.0, 0.0])):
        with pytest.raises(TypeError, match=r"integers 0\.\.K-1"):
            smooth_labels(bad, a)
    with pytest.raises(ValueError, match="non-negative"):
        smooth_labels(np.array([-1, 0, 1]), a)  # the code of a missing category
    with pytest.raises(ValueError, match="but there are 2 labels"):
        smooth_labels(np.array([0, 1]), a)
    adata = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="not an AnnData"):
        smooth_embedding(adata, a)
    with pytest.raises(TypeError, match="not an AnnData"):
        smooth_labels(adata, a)
