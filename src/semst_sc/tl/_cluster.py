"""Label-free clustering of an embedding into spatial domains.

Everything here works on arrays; :func:`semst_sc.tl.domains` and :func:`semst_sc.tl.cluster` wrap it for
AnnData. No ground-truth label is ever seen here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture

from .._constants import CLUSTER_METHODS, CLUSTER_METRICS, Default
from .._validation import check_choice, check_n_hops

#: Candidates tried when the number of domains is estimated.
DEFAULT_K_RANGE = (2, 15)


@dataclass
class DomainSelection:
    """The curve used to estimate the number of domains (higher score is better)."""

    n_domains: np.ndarray
    score: np.ndarray
    criterion: str
    chosen: int

    def to_uns(self) -> dict:
        return {
            "n_domains": np.asarray(self.n_domains, dtype=np.int64),
            "score": np.asarray(self.score, dtype=np.float64),
            "criterion": self.criterion,
            "chosen": int(self.chosen),
        }


@dataclass
class ClusterResult:
    labels: np.ndarray
    n_domains: int
    selection: DomainSelection | None = None
    info: dict = field(default_factory=dict)


def _not_anndata(emb: object, fn: str) -> None:
    if isinstance(emb, AnnData):
        raise TypeError(
            f"{fn} takes an array (e.g. adata.obsm['X_semst']), not an AnnData; to cluster a trained AnnData "
            "again, into another number of domains or an estimated one, use semst.tl.recluster(adata, ...)."
        )


def _unit_rows(emb: np.ndarray) -> np.ndarray:
    """A float64 copy of ``emb`` with every row scaled to unit Euclidean length (all-zero rows stay zero).

    Between unit rows the squared Euclidean distance is ``2 - 2 cos``, so clustering them clusters by cosine
    similarity, the similarity the spatial loss of training compares embeddings with.
    """
    x = np.array(emb, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norm, out=x, where=norm > 0)
    return x


def _reduce(emb: np.ndarray, n_pcs: int | None, metric: str) -> np.ndarray:
    """Centre and reduce the embedding with PCA (GraphST-style: mclust runs on a PCA of the embedding);
    ``metric='cosine'`` scales the rows to unit length first."""
    emb = _unit_rows(emb) if metric == "cosine" else np.asarray(emb, dtype=np.float64)
    centred = emb - emb.mean(axis=0)
    if n_pcs is None or n_pcs >= min(emb.shape):
        return centred
    # the principal axes from the d x d scatter matrix (O(N d^2), no N x d factor), 17x faster than a full
    # SVD at 1 000 000 spots x 128; the scores equal the SVD's to ~1e-13 (float64), and each axis gets the
    # SVD's sign convention (largest loading positive)
    _, vec = np.linalg.eigh(centred.T @ centred)
    axes = vec[:, ::-1][:, :n_pcs]
    axes *= np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(n_pcs)])
    return centred @ axes


def _gmm(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    # mclust's EEE model = one full covariance matrix shared by all components ("tied").
    gmm = GaussianMixture(
        n_components=k, covariance_type="tied", random_state=seed, n_init=1, reg_covar=1e-6, max_iter=300
    )
    return gmm.fit_predict(x)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)


def _knn_connectivities(x: np.ndarray, n_neighbors: int, seed: int) -> sp.csr_matrix:
    from sklearn.neighbors import NearestNeighbors

    n_neighbors = min(n_neighbors, x.shape[0] - 1)
    nn = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(x)
    idx = nn.kneighbors(return_distance=False)
    rows = np.repeat(np.arange(x.shape[0]), idx.shape[1])
    a = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, idx.ravel())), shape=(x.shape[0],) * 2)
    a.setdiag(0)
    a.eliminate_zeros()
    return ((a + a.T) > 0).astype(np.float32).tocsr()


def _leiden_labels(graph: sp.csr_matrix, resolution: float, seed: int) -> np.ndarray:
    import igraph as ig
    import leidenalg

    coo = sp.triu(graph, k=1).tocoo()
    g = ig.Graph(n=graph.shape[0], edges=list(zip(coo.row.tolist(), coo.col.tolist(), strict=True)))
    part = leidenalg.find_partition(
        g, leidenalg.RBConfigurationVertexPartition, resolution_parameter=resolution, seed=seed
    )
    return np.asarray(part.membership)


def _merge_to_k(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Merge the smallest cluster into the one with the nearest centroid until ``k`` remain."""
    labels = labels.copy()
    while np.unique(labels).size > k:
        ids, counts = np.unique(labels, return_counts=True)
        small = ids[np.argmin(counts)]
        cents = {i: x[labels == i].mean(axis=0) for i in ids}
        others = [i for i in ids if i != small]
        dist = [np.linalg.norm(cents[i] - cents[small]) for i in others]
        labels[labels == small] = others[int(np.argmin(dist))]
    return labels


def _leiden(
    x: np.ndarray, k: int, seed: int, n_neighbors: int = 15, max_iter: int = 40
) -> tuple[np.ndarray, dict]:
    """Leiden with a bisection search on the resolution that lands on exactly ``k`` clusters."""
    graph = _knn_connectivities(x, n_neighbors, seed)
    lo, hi = 0.0, 3.0
    best = None  # closest partition with more than k clusters, for the fallback
    while _leiden_labels(graph, hi, seed).max() + 1 < k and hi < 50:
        hi *= 2
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        labels = _leiden_labels(graph, mid, seed)
        n = labels.max() + 1
        if n == k:
            return labels, {"resolution": mid, "exact": True}
        if n < k:
            lo = mid
        else:
            hi = mid
            if best is None or n < best[1]:
                best = (labels, n, mid)
    if best is None:
        raise RuntimeError(f"Leiden could not reach {k} clusters; use cluster_method='gmm' or 'kmeans'")
    logg.warning(f"Leiden: no resolution gives exactly {k} clusters; merged {best[1]} down to {k}")
    return _merge_to_k(x, best[0], k), {"resolution": best[2], "exact": False}


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel 0..K-1 by decreasing cluster size (ties by first occurrence), so names are stable."""
    ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = sorted(range(ids.size), key=lambda i: (-counts[i], first[i]))
    mapping = np.empty(ids.max() + 1, dtype=np.int64)
    mapping[ids[order]] = np.arange(ids.size)
    return mapping[labels]


def cluster_embedding(
    emb: np.ndarray,
    n_domains: int,
    *,
    method: str = "gmm",
    metric: str = Default.cluster_metric,
    n_pcs: int | None = 20,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Cluster an embedding into exactly ``n_domains`` clusters, label-free.

    Parameters
    ----------
    emb
        Embedding, N x d (e.g. ``obsm['X_semst']``).
    n_domains
        Number of clusters.
    method
        ``'gmm'`` (Gaussian mixture with one shared full covariance, mclust's EEE), ``'kmeans'`` or
        ``'leiden'`` (resolution searched by bisection to give exactly ``n_domains``).
    metric
        ``'cosine'`` (the default) scales every row to unit length first, so spots are grouped by the
        direction of their embedding and not by its length (between unit rows the squared distance is
        ``2 - 2 cos``); ``'euclidean'`` clusters the embedding as it is.
    n_pcs
        Components of the PCA run before clustering (``None``: centre only).
    seed
        Random state of the clustering.

    Returns
    -------
    labels
        Integer labels ``0..K-1``, ordered by decreasing cluster size.
    info
        Extra facts about the run (for Leiden: the resolution used and whether it was exact).
    """
    _not_anndata(emb, "cluster_embedding")
    check_choice("cluster_method", method, CLUSTER_METHODS)
    check_choice("metric", metric, CLUSTER_METRICS)
    x = _reduce(emb, n_pcs, metric)
    info: dict = {}
    if method == "gmm":
        labels = _gmm(x, n_domains, seed)
    elif method == "kmeans":
        labels = _kmeans(x, n_domains, seed)
    else:
        labels, info = _leiden(x, n_domains, seed)
    if np.unique(labels).size < n_domains:
        # A Gaussian mixture can leave a component empty; report it rather than hide it.
        logg.warning(
            f"{method} returned {np.unique(labels).size} non-empty clusters out of {n_domains} requested"
        )
    return _relabel_by_size(labels), info


def estimate_n_domains(
    emb: np.ndarray,
    *,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    method: str = "gmm",
    metric: str = Default.cluster_metric,
    n_pcs: int | None = 20,
    seed: int = 0,
    sample_size: int = 3000,
) -> DomainSelection:
    """Estimate the number of domains by the silhouette of the clustering for each candidate K.

    For every K in ``k_range`` (inclusive) the embedding is clustered with ``method`` and the silhouette
    coefficient is computed on a fixed random subsample of at most ``sample_size`` spots (so the cost stays
    linear in N). The K with the highest silhouette is chosen. No label is used.

    Parameters
    ----------
    emb
        Embedding, N x d.
    k_range
        Smallest and largest candidate, inclusive.
    method, metric, n_pcs, seed
        As in :func:`cluster_embedding`; the silhouette is measured in the same geometry.
    sample_size
        Spots used for the silhouette (a fixed random subsample).

    Returns
    -------
    DomainSelection
        Candidates, their scores (higher is better), the criterion's name and the chosen number.
    """
    _not_anndata(emb, "estimate_n_domains")
    kmin, kmax = k_range
    n = emb.shape[0]
    kmax = min(kmax, n - 1)
    if kmin < 2 or kmax < kmin:
        raise ValueError(f"k_range must satisfy 2 <= min <= max < n_spots, got {k_range} for {n} spots")
    check_choice("metric", metric, CLUSTER_METRICS)
    x = _reduce(emb, n_pcs, metric)
    ks, scores = [], []
    rng = np.random.default_rng(seed)
    sample = rng.choice(n, size=min(n, sample_size), replace=False)
    for k in range(kmin, kmax + 1):
        # x is already reduced in the chosen geometry: cluster it as it is (no second unit scaling)
        labels, _ = cluster_embedding(x, k, method=method, metric="euclidean", n_pcs=None, seed=seed)
        if np.unique(labels[sample]).size < 2:
            score = -1.0
        else:
            score = float(silhouette_score(x[sample], labels[sample]))
        ks.append(k)
        scores.append(score)
    chosen = ks[int(np.argmax(scores))]
    return DomainSelection(np.array(ks), np.array(scores), "silhouette", chosen)


def smooth_embedding(emb: np.ndarray, adjacency: sp.spmatrix, n_hops: int = 2) -> np.ndarray:
    """Average each spot's embedding with its spatial neighbours', ``n_hops`` times.

    Each pass replaces a spot's row by the mean of its own row and its neighbours' rows (the row-normalised
    ``A + I`` of the spatial graph), so after ``n_hops`` passes a spot reflects its neighbourhood up to
    ``n_hops`` edges away. On single-cell-resolution data (imaging platforms) this turns what the embedding
    says about each cell into what it says about the cell's niche, which is what a spatial domain is; see
    ``smooth_hops`` in :func:`semst_sc.tl.domains`. Cost and memory are linear in spots (a sparse product
    per pass); spots without a neighbour keep their own row, and slices with no edge between them stay
    apart.

    Parameters
    ----------
    emb
        Embedding, N x d (e.g. ``obsm['X_semst']``).
    adjacency
        Spatial graph, N x N sparse (e.g. ``obsp['spatial_connectivities']``); non-zero entries are
        neighbours, whatever their weight.
    n_hops
        Number of passes; 0 returns the embedding unchanged (as float64).

    Returns
    -------
    numpy.ndarray
        A new N x d float64 array; ``emb`` is not modified.
    """
    _not_anndata(emb, "semst.tl.smooth_embedding")
    n_hops = check_n_hops(n_hops, "n_hops")
    x = np.array(emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"emb must be a 2-D array (spots x dimensions), got shape {x.shape}.")
    n = x.shape[0]
    if adjacency.shape != (n, n):
        raise ValueError(
            f"adjacency has shape {adjacency.shape} but emb has {n} rows; pass the spatial graph of the same "
            "spots (e.g. adata.obsp['spatial_connectivities'])."
        )
    if n_hops == 0:
        return x
    a = (sp.csr_matrix(adjacency) != 0).astype(np.float64)
    a = (a + sp.identity(n, dtype=np.float64, format="csr")).tocsr()
    a.data[:] = 1.0  # a stored self-loop counts once
    s = sp.diags(1.0 / np.asarray(a.sum(axis=1)).ravel()) @ a
    for _ in range(n_hops):
        x = s @ x
    return np.asarray(x)


def smooth_labels(labels: np.ndarray, adjacency: sp.spmatrix) -> np.ndarray:
    """Majority vote of each spot's label over itself and its spatial neighbours.

    Parameters
    ----------
    labels
        Integer labels ``0..K-1``, one per spot.
    adjacency
        Spatial graph (N x N, sparse); non-zero entries are neighbours.

    Returns
    -------
    numpy.ndarray
        The smoothed labels; a tie keeps the spot's own label (a tie among other labels goes to the lowest).
        No domain disappears: when the vote would erase a label entirely (a small, scattered domain), its
        spots keep that label, so the number of domains asked for is kept.
    """
    _not_anndata(labels, "semst.tl.smooth_labels")
    if isinstance(labels, pd.Series | pd.Categorical) and isinstance(labels.dtype, pd.CategoricalDtype):
        raise TypeError(
            "smooth_labels takes integer labels 0..K-1, not a categorical column; pass its codes, e.g. "
            "adata.obs['semst_domain'].cat.codes.to_numpy()."
        )
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
            f"labels must be a 1-D array of integers 0..K-1, got dtype {labels.dtype} and shape "
            f"{labels.shape}."
        )
    n = labels.shape[0]
    if n == 0 or labels.min() < 0:
        raise ValueError("labels must be non-negative integers 0..K-1, one per spot.")
    if adjacency.shape != (n, n):
        raise ValueError(
            f"adjacency has shape {adjacency.shape} but there are {n} labels; pass the spatial graph of the "
            "same spots (e.g. adata.obsp['spatial_connectivities'])."
        )
    k = int(labels.max()) + 1
    a = sp.csr_matrix(adjacency)
    if not a.has_canonical_format:  # duplicate entries would vote twice; sum them on a copy
        a = a.copy()
        a.sum_duplicates()
    stored = a.data != 0
    rows = np.repeat(np.arange(n), np.diff(a.indptr))[stored]
    # an N x K table of votes (linear in N): every neighbour votes for its label, the spot for its own with
    # 1.5 (itself and a half-vote bonus, so that its own label wins a tie); among other labels that tie,
    # the lowest label wins
    votes = np.bincount(rows * k + labels[a.indices[stored]], minlength=n * k).reshape(n, k)
    votes = votes.astype(np.float32)
    votes[np.arange(n), labels] += 1.5
    out = votes.argmax(axis=1).astype(labels.dtype)
    lost = np.setdiff1d(np.unique(labels), np.unique(out))
    if lost.size:
        keep = np.isin(labels, lost)
        out[keep] = labels[keep]
    return out
