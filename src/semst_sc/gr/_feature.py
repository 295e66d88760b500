"""Expression (feature) graph: cosine k nearest neighbours, union-symmetrised, never an N x N array.

Two ways to find the neighbours, both deterministic for a given ``seed``:

``'exact'``
    The method's graph (METHOD.md 1.2): cosine similarity on the preprocessed matrix itself. Rows are
    L2-normalised and the similarities of a block of rows to all rows are computed at a time (a dense
    BLAS product when the matrix is small enough to densify, otherwise a sparse product), keeping the
    block at about 128 MB, and the top ``k`` of each row are kept. Time grows with N^2, so it is the
    default only up to :data:`EXACT_MAX_OBS` spots (about 1 s for 3000 Visium spots here).
``'svd'``
    For large N. The L2-normalised rows are projected on their first ``n_components`` (50) singular
    vectors (randomised truncated SVD, no centring, so inner products and hence cosines are what is
    approximated; above :data:`SVD_FIT_MAX` spots the vectors are fitted on that many spots drawn at
    random, seeded, and every spot is projected on them), re-normalised, and the neighbours are searched
    with an inverted-file index: k-means cells of about :data:`CELL_SIZE` spots, each cell searched
    exactly against its :data:`N_PROBE` nearest cells. The cells are found in two levels (about
    sqrt(number of cells) k-means groups, each split into its share of cells, k-means on 20 sampled spots
    per cell), so that no step compares every spot with every cell. Work and memory grow linearly with N,
    but for ordering the cells by their distance to each cell (cells squared, about 3 s of the search at
    1 000 000 spots); see ``benchmarks/graphs.py`` for 10 000-1 000 000 spots.
    This is *not* a close approximation of the exact graph: on DLPFC 151673 (3000
    HVGs) only about 13 % of the exact neighbours are kept, because cosine on thousands of sparse genes is
    dominated by noise; the low-rank graph is a denoised one (61 % of its neighbours share the annotated
    layer, against 43 % for the exact graph; with 2000 genes, 61-62 % with the singular vectors fitted on
    all 2929 spots and 63 % with them fitted on 1000, seeds 0 and 1). The index is approximate as well: on
    the real slices, with cells made small enough that only 4-26 % of the spots are searched, it finds
    72-93 % of the true neighbours of the 50-dimensional space (DLPFC, STARmap, osmFISH, seeds 0 and 1);
    on the synthetic benchmark of
    ``benchmarks/graphs.py`` (100 000 spots, domains that are featureless noise clouds: the hardest case)
    64 %, and over 99 % of the neighbours it returns lie in the spot's own domain.

``'auto'`` picks ``'exact'`` up to :data:`EXACT_MAX_OBS` spots and ``'svd'`` above. pynndescent was
measured and left out: its numba compilation alone takes about a minute in every new process here.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from anndata import AnnData
from scanpy import logging as logg
from scipy import sparse

from .._constants import Default, Key
from .._docs import inject_docs
from .._utils import block_rows, row_blocks, user_stacklevel
from .._validation import check_anndata, check_choice, check_key, check_n_neighbors, check_obsm, get_counts
from ._spatial import _groups

FEATURE_METHODS = ("auto", "exact", "svd")
#: ``method='auto'`` uses the exact search up to this many spots.
EXACT_MAX_OBS = 10_000
#: The ``'svd'`` search fits its singular vectors on at most this many spots (drawn at random, seeded).
SVD_FIT_MAX = 50_000
#: Target number of spots per inverted-file cell of the ``'svd'`` search.
CELL_SIZE = 256
#: Cells searched for the queries of each cell (its own and the nearest others).
N_PROBE = 12
_BLOCK_BYTES = 128 * 2**20  # similarity block held at once
_DENSE_BYTES = 2**30  # densify the normalised matrix for BLAS up to this size


def _normalize_rows(X: sparse.spmatrix | np.ndarray) -> tuple[sparse.csr_matrix | np.ndarray, int]:
    """L2-normalised float32 rows (zero rows stay zero) and the number of zero rows."""
    if sparse.issparse(X):
        Xn = sparse.csr_matrix(X, dtype=np.float32, copy=True)
        Xn.sum_duplicates()
        norms = np.zeros(Xn.shape[0], dtype=np.float64)
        for a, b, lo, hi in row_blocks(Xn.indptr):
            v = Xn.data[lo:hi].astype(np.float64)
            norms[a:b] = np.sqrt(np.bincount(block_rows(Xn.indptr, a, b), weights=v * v, minlength=b - a))
        inv = np.zeros_like(norms)
        inv[norms > 0] = 1.0 / norms[norms > 0]
        for a, b, lo, hi in row_blocks(Xn.indptr):
            Xn.data[lo:hi] *= inv[a:b][block_rows(Xn.indptr, a, b)].astype(np.float32)
        # drop all-zero columns (a full-width layer is zero outside the highly variable genes)
        used = np.flatnonzero(np.bincount(Xn.indices, minlength=Xn.shape[1]))
        if used.size < Xn.shape[1]:
            Xn = Xn[:, used]
        return Xn, int((norms == 0).sum())
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    inv = np.zeros_like(norms)
    inv[norms > 0] = 1.0 / norms[norms > 0]
    return (X * inv[:, None].astype(np.float32)), int((norms == 0).sum())


def _top_k(S: np.ndarray, k: int, self_cols: np.ndarray | None, *, use_torch: bool = False) -> np.ndarray:
    """Column indices of the ``k`` largest entries of every row of ``S``, excluding ``self_cols``.

    ``use_torch``: ``torch.topk`` (about 3x faster on two threads) instead of numpy's ``argpartition``.
    The two may break ties between equal similarities differently, so the exact search keeps numpy and
    the graphs it built before stay the same bit for bit (on small panels such as osmFISH's 33 genes, ties
    are common).
    """
    if self_cols is not None:
        rows = np.flatnonzero(self_cols >= 0)
        S[rows, self_cols[rows]] = -np.inf
    if use_torch:
        import torch

        return torch.topk(torch.from_numpy(S), k, dim=1, sorted=False).indices.numpy()
    return np.argpartition(S, S.shape[1] - k, axis=1)[:, -k:]


def _block_rows(n_cols: int) -> int:
    return max(1, _BLOCK_BYTES // (4 * max(n_cols, 1)))


def _knn_brute(Xn: sparse.csr_matrix | np.ndarray, k: int) -> np.ndarray:
    """Exact top-k by inner product of (normalised) rows, block by block; N x k indices."""
    n = Xn.shape[0]
    dense = not sparse.issparse(Xn)
    if not dense and n * Xn.shape[1] * 4 <= _DENSE_BYTES:
        Xn, dense = Xn.toarray(), True
    XnT = Xn.T if dense else None
    out = np.empty((n, k), dtype=np.int64)
    step = _block_rows(n)
    for a in range(0, n, step):
        b = min(n, a + step)
        if dense:
            S = Xn[a:b] @ XnT
        else:
            S = np.asarray((Xn @ Xn[a:b].T.toarray()).T)
        out[a:b] = _top_k(np.ascontiguousarray(S, dtype=np.float32), k, np.arange(a, b))
    return out


def _reduce(
    Xn: sparse.csr_matrix | np.ndarray, n_components: int, seed: int, max_fit: int = SVD_FIT_MAX
) -> np.ndarray:
    """Rows projected on the first singular vectors (uncentred), re-normalised; float32 dense.

    With more than ``max_fit`` rows, the singular vectors are fitted on ``max_fit`` rows drawn at random
    (seeded) and every row is projected on them.
    """
    from sklearn.decomposition import TruncatedSVD

    n, n_features = Xn.shape
    if n_features <= n_components:
        Y = Xn.toarray() if sparse.issparse(Xn) else np.asarray(Xn)
    else:
        svd = TruncatedSVD(n_components=n_components, algorithm="randomized", n_iter=5, random_state=seed)
        if n > max_fit:
            rows = np.sort(np.random.default_rng(seed).choice(n, size=max_fit, replace=False))
            Y = svd.fit(Xn[rows]).transform(Xn)
        else:
            Y = svd.fit_transform(Xn)
    Y, _ = _normalize_rows(np.asarray(Y, dtype=np.float32))
    return np.ascontiguousarray(Y)


def _kmeans_centers(Y: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Centres of a quick k-means of the rows ``Y`` (k-means++ start, one run, at most 15 iterations)."""
    from sklearn.cluster import KMeans

    if n_clusters >= Y.shape[0]:
        return np.ascontiguousarray(Y, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty or duplicate clusters on degenerate data are harmless here
        km = KMeans(n_clusters=n_clusters, n_init=1, max_iter=15, random_state=seed).fit(Y)
    return np.ascontiguousarray(km.cluster_centers_, dtype=np.float32)


def _nearest(Y: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest (Euclidean) centre of every row of ``Y``, block by block."""
    half_sq = (0.5 * (centers.astype(np.float64) ** 2).sum(axis=1)).astype(np.float32)
    out = np.empty(Y.shape[0], dtype=np.int64)
    step = _block_rows(centers.shape[0])
    for a in range(0, Y.shape[0], step):
        out[a : a + step] = np.argmax(Y[a : a + step] @ centers.T - half_sq, axis=1)
    return out


def _cells(Y: np.ndarray, n_cells: int, cell_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """About ``n_cells`` k-means cells of the rows of ``Y``: ``(centers, assign)``.

    Two levels, so that the work grows linearly with N: about sqrt(n_cells) coarse groups, then every group
    split into cells of about ``cell_size`` rows. k-means at both levels runs on a seeded sample of 20 rows
    per cell; every row is assigned to its group's nearest cell.
    """
    rng = np.random.default_rng(seed)
    n = Y.shape[0]
    sample = np.sort(rng.choice(n, size=min(n, 20 * n_cells), replace=False))
    groups = _nearest(Y, _kmeans_centers(Y[sample], max(1, int(np.sqrt(n_cells))), seed))
    in_sample = np.zeros(n, dtype=bool)
    in_sample[sample] = True
    centers, assign = [], np.empty(n, dtype=np.int64)
    offset = 0
    for members in _groups(groups):
        if members.size == 0:
            continue
        fit = members[in_sample[members]]
        if fit.size == 0:
            fit = members
        c = _kmeans_centers(Y[fit], max(1, min(fit.size, round(members.size / cell_size))), seed)
        assign[members] = offset + _nearest(Y[members], c)
        centers.append(c)
        offset += c.shape[0]
    return np.concatenate(centers), assign


def _knn_ivf(
    Y: np.ndarray, k: int, *, seed: int, cell_size: int = CELL_SIZE, n_probe: int = N_PROBE
) -> np.ndarray:
    """Top-k by inner product with an inverted-file index on k-means cells; exact when it has few cells."""
    n = Y.shape[0]
    n_cells = n // cell_size
    if n_cells <= n_probe:
        return _knn_brute(Y, k)
    centers, assign = _cells(Y, n_cells, cell_size, seed)
    n_cells = centers.shape[0]
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(n_cells + 1))
    sizes = np.diff(bounds)

    out = np.empty((n, k), dtype=np.int64)
    for c in range(n_cells):
        queries = order[bounds[c] : bounds[c + 1]]
        if queries.size == 0:
            continue
        near = np.argsort(((centers - centers[c]) ** 2).sum(axis=1), kind="stable")
        # the n_probe nearest cells, more if they hold too few spots for k neighbours
        n_take = max(n_probe, int(np.searchsorted(np.cumsum(sizes[near]), 4 * (k + 1))) + 1)
        cand = np.sort(np.concatenate([order[bounds[p] : bounds[p + 1]] for p in near[:n_take]]))
        kk = min(k, cand.size - 1)
        Ycand_T = np.ascontiguousarray(Y[cand].T)
        qstep = _block_rows(cand.size)
        for a in range(0, queries.size, qstep):
            q = queries[a : a + qstep]
            S = Y[q] @ Ycand_T
            self_cols = np.searchsorted(cand, q)  # every query is among its own cell's candidates
            top = cand[_top_k(S, kk, self_cols, use_torch=True)]
            if kk < k:  # only when the whole data set is tiny; pad with the last neighbour
                top = np.concatenate([top, np.repeat(top[:, -1:], k - kk, axis=1)], axis=1)
            out[q] = top
    return out


def _graph_from_indices(ind: np.ndarray) -> sparse.csr_matrix:
    n, k = ind.shape
    rows = np.repeat(np.arange(n), k)
    A = sparse.csr_matrix((np.ones(n * k, dtype=np.float32), (rows, ind.ravel())), shape=(n, n))
    A = A.maximum(A.T).tocsr()
    A.setdiag(0)
    A.eliminate_zeros()
    A.data[:] = 1.0
    A.sort_indices()
    return A.astype(np.float32)


def knn_indices(
    X: sparse.spmatrix | np.ndarray,
    n_neighbors: int,
    *,
    method: str = "auto",
    n_components: int = 50,
    seed: int = Default.seed,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Indices of every row's ``n_neighbors`` most cosine-similar other rows.

    Parameters
    ----------
    X
        Spots x features, sparse or dense.
    n_neighbors
        Neighbours per row (the row itself excluded).
    method
        ``'exact'``, ``'svd'`` or ``'auto'`` (see :func:`semst_sc.gr.feature_graph`).
    n_components
        Dimensions kept by ``method='svd'``.
    seed
        Seed of the SVD and of the k-means cells of ``method='svd'``.

    Returns
    -------
    ``(indices, info)``: an N x ``n_neighbors`` integer array (unordered within a row) and a dict of what
    was done (``method``, ``metric``, ``n_neighbors``; ``n_components``, ``cell_size``, ``n_probe``,
    ``seed`` for ``'svd'``).
    """
    check_choice("method", method, FEATURE_METHODS)
    if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer) or n_components < 2:
        raise ValueError(f"n_components must be an integer >= 2, got {n_components!r}.")
    if X.ndim != 2:
        raise ValueError(f"the feature matrix must be two-dimensional, got shape {X.shape}.")
    n = X.shape[0]
    k = check_n_neighbors(n, n_neighbors, "the feature graph")
    values = X.data if sparse.issparse(X) else np.asarray(X)
    if values.dtype.kind not in "iuf":
        raise TypeError(f"the feature matrix must hold numbers, got dtype {values.dtype}.")
    if not np.isfinite(values).all():
        raise ValueError(
            "the feature matrix has NaN or infinite values; cosine similarity is undefined there."
        )
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_OBS else "svd"
    Xn, n_zero = _normalize_rows(X)
    if n_zero:
        warnings.warn(
            f"{n_zero} of {n} spots have an all-zero feature row; their cosine neighbours are arbitrary. "
            "Remove spots without expression first.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    info: dict[str, Any] = {"method": method, "metric": "cosine", "n_neighbors": k}
    if method == "exact":
        ind = _knn_brute(Xn, k)
    else:
        # the module's constants are read here, at call time (tests and benchmarks may change them)
        Y = _reduce(Xn, n_components, seed, max_fit=SVD_FIT_MAX)
        ind = _knn_ivf(Y, k, seed=seed, cell_size=CELL_SIZE, n_probe=N_PROBE)
        info.update(n_components=int(Y.shape[1]), cell_size=CELL_SIZE, n_probe=N_PROBE, seed=int(seed))
    return ind, info


def cosine_knn_graph(
    X: sparse.spmatrix | np.ndarray,
    n_neighbors: int = Default.feature_k,
    *,
    method: str = "auto",
    n_components: int = 50,
    seed: int = Default.seed,
) -> sparse.csr_matrix:
    """Cosine kNN graph of the rows of ``X``: 0/1 float32 CSR, union-symmetric, no self loops.

    Parameters
    ----------
    X
        Spots x features, sparse or dense (e.g. the preprocessed matrix).
    n_neighbors
        Neighbours per spot before symmetrisation.
    method
        ``'exact'``, ``'svd'`` or ``'auto'`` (see :func:`semst_sc.gr.feature_graph`).
    n_components
        Dimensions kept by ``method='svd'``.
    seed
        Seed of the SVD and of the k-means cells of ``method='svd'``.

    Returns
    -------
    N x N sparse adjacency.
    """
    ind, _ = knn_indices(X, n_neighbors, method=method, n_components=n_components, seed=seed)
    return _graph_from_indices(ind)


def _uns_key(key_added: str) -> str:
    suffix = "_connectivities"
    stem = key_added[: -len(suffix)] if key_added.endswith(suffix) else key_added
    return f"{stem}_neighbors"


@inject_docs()
def feature_graph(
    adata: AnnData,
    *,
    n_neighbors: int = Default.feature_k,
    layer: str | None = Key.layers.scaled,
    use_rep: str | None = None,
    method: str = "auto",
    n_components: int = 50,
    seed: int = Default.seed,
    counts_layer: str | None = None,
    key_added: str = Key.obsp.feature_conn,
    copy: bool = False,
) -> AnnData | None:
    """Build the expression graph: cosine k nearest neighbours, union-symmetrised (0/1, no self loops).

    By default the neighbours are found on the preprocessed matrix in ``layers['{scaled}']`` (written by
    :func:`semst_sc.pp.preprocess`). When that layer is absent the counts are preprocessed on the fly with
    the same defaults (nothing is written but the graph). Up to 10 000 spots the search is exact; above,
    it runs on a 50-component SVD with an inverted-file index (see ``method``). Nothing N x N is formed.

    Parameters
    ----------
    {adata}
    n_neighbors
        Neighbours per spot before symmetrisation (k_n of the method: 14 on DLPFC, 5 on STARmap).
    layer
        Layer with the features; ``None`` uses ``adata.X``.
    use_rep
        Key of :attr:`anndata.AnnData.obsm` to use instead of a layer (e.g. ``'X_pca'``).
    method
        ``'exact'`` (cosine on the full matrix, time ~ N^2), ``'svd'`` (cosine on a truncated SVD with an
        inverted-file index, time ~ N; a denoised graph rather than a copy of the exact one) or ``'auto'``
        (exact up to 10 000 spots).
    n_components
        Dimensions kept by ``method='svd'``.
    {seed}
    counts_layer
        Layer with raw counts, used only when the preprocessed layer has to be computed; ``None``: ``X``.
    key_added
        Key of :attr:`anndata.AnnData.obsp` that receives the graph. The default key is written again on
        every call, and so is another key this function wrote before; a graph or record under that key
        that it did not write (``'spatial_connectivities'``, say) is refused with a ValueError (also with
        ``copy=True``), never replaced.
    {copy}

    Returns
    -------
    With ``copy=True`` a new AnnData, else ``None``. Writes

    - ``obsp[key_added]`` - CSR float32 0/1 adjacency (default ``'{feature_conn}'``);
    - ``uns[...]`` - ``key_added`` with ``'_connectivities'`` replaced by ``'_neighbors'`` (default
      ``'{feature_uns}'``): ``connectivities_key`` and ``params`` (``n_neighbors``, ``method``,
      ``source``, ``mean_degree``, ...).
    """
    check_anndata(adata, fn="semst.gr.feature_graph")
    check_key(key_added)
    uns_key = _uns_key(key_added)
    clash = [f"adata.obsp[{key_added!r}]"] if key_added in adata.obsp else []
    clash += [f"adata.uns[{uns_key!r}]"] if uns_key in adata.uns else []
    record = adata.uns.get(uns_key)
    own = (  # a graph this function wrote under that key: its record names the key and the graph's source
        isinstance(record, dict)
        and record.get("connectivities_key") == key_added
        and isinstance(record.get("params"), dict)
        and "source" in record["params"]
    )
    if clash and key_added != Key.obsp.feature_conn and not own:
        # e.g. key_added='spatial_connectivities': the spatial graph and squidpy's record of it
        raise ValueError(
            f"semst.gr.feature_graph would overwrite {' and '.join(clash)}. Pass another key_added= (the "
            f"default is {Key.obsp.feature_conn!r}), or remove {'them' if len(clash) > 1 else 'it'} first if "
            "to be replaced."
        )
    check_choice("method", method, FEATURE_METHODS)
    check_n_neighbors(adata.n_obs, n_neighbors, "the feature graph")
    if use_rep is not None:
        X = check_obsm(
            adata, use_rep, n_obs=adata.n_obs, made_by="the function that made it (e.g. sc.pp.pca)"
        )
        source = f"obsm/{use_rep}"
    elif layer is None:
        X, source = adata.X, "X"
    elif layer in adata.layers:
        X, source = adata.layers[layer], f"layers/{layer}"
    elif layer == Key.layers.scaled:
        from ..pp import preprocess_arrays

        logg.info(
            f"    layers[{layer!r}] not found: preprocessing the counts on the fly (nothing else is written)"
        )
        X = preprocess_arrays(get_counts(adata, layer=counts_layer), adata.var_names).X
        source = "counts (preprocessed on the fly)"
    else:
        present = ", ".join(map(repr, adata.layers.keys())) or "none"
        raise KeyError(
            f"layer {layer!r} not found in adata.layers (present: {present}); semst.pp.preprocess(adata, "
            f"key_added={layer!r}) makes it, or pass layer=None to use adata.X."
        )
    start = logg.info(f"building the feature graph ({n_neighbors}-NN, cosine) on {adata.n_obs} spots")
    ind, params = knn_indices(X, n_neighbors, method=method, n_components=n_components, seed=seed)
    graph = _graph_from_indices(ind)
    params.update(source=source, mean_degree=float(graph.nnz / graph.shape[0]))
    target = adata.copy() if copy else adata
    target.obsp[key_added] = graph
    target.uns[uns_key] = {"connectivities_key": key_added, "params": params}
    logg.info(
        f"    finished ({params['method']}): mean degree {params['mean_degree']:.1f}",
        time=start,
        deep=f"added\n    'obsp[{key_added!r}]', 'uns[{uns_key!r}]'",
    )
    return target if copy else None


feature_graph.__doc__ = (
    feature_graph.__doc__.replace("{scaled}", Key.layers.scaled)
    .replace("{feature_conn}", Key.obsp.feature_conn)
    .replace("{feature_uns}", Key.uns.feature_graph)
)
