"""Graphs: checked against brute-force computations on small inputs, and on the real slices."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import squidpy as sq
from scipy import sparse
from scipy.spatial.distance import cdist

import semst_sc as semst
import semst_sc._utils as utils
from semst_sc._constants import Key
from semst_sc.gr import _feature, _spatial


def _points(n=200, seed=0, dim=2, scale=100.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, scale, size=(n, dim))


def _adata_from(coords: np.ndarray, **obs) -> ad.AnnData:
    n = coords.shape[0]
    rng = np.random.default_rng(0)
    X = sparse.csr_matrix(rng.poisson(2.0, size=(n, 30)).astype(np.float32) + np.eye(n, 30, dtype=np.float32))
    adata = ad.AnnData(X=X, obs=pd.DataFrame(obs, index=[f"s{i}" for i in range(n)]))
    adata.var_names = [f"g{j}" for j in range(30)]
    adata.obsm[Key.obsm.spatial] = coords
    return adata


def _check_graph(conn: sparse.spmatrix) -> None:
    """0/1 float32 CSR, symmetric, no self loops."""
    assert isinstance(conn, sparse.csr_matrix) and conn.dtype == np.float32
    assert conn.diagonal().sum() == 0
    assert (conn != conn.T).nnz == 0
    assert np.all(conn.data == 1.0)


def _brute_knn_union(D: np.ndarray, k: int) -> np.ndarray:
    """Union-symmetric kNN adjacency from a dense distance matrix (self excluded)."""
    D = D.copy()
    np.fill_diagonal(D, np.inf)
    nn = np.argsort(D, axis=1)[:, :k]
    A = np.zeros(D.shape, dtype=bool)
    A[np.repeat(np.arange(D.shape[0]), k), nn.ravel()] = True
    return A | A.T


# --------------------------------------------------------------------------------------------- spatial graph
def test_radius_graph_equals_thresholded_distance_matrix():
    coords = _points()
    adata = _adata_from(coords)
    semst.gr.spatial_graph(adata, radius=12.5)
    conn = adata.obsp[Key.obsp.spatial_conn]
    _check_graph(conn)
    D = cdist(coords, coords)
    expected = (D <= 12.5) & ~np.eye(len(coords), dtype=bool)
    np.testing.assert_array_equal(conn.toarray().astype(bool), expected)
    dist = adata.obsp[Key.obsp.spatial_dist].toarray()
    np.testing.assert_allclose(dist[expected], D[expected], rtol=1e-12)
    assert np.all(dist[~expected] == 0)
    params = adata.uns[Key.uns.spatial_graph]["params"]
    assert params["mode"] == "radius" and params["radius"] == 12.5
    assert params["mean_degree"] == pytest.approx(expected.sum() / len(coords))


def test_radius_graph_matches_squidpy_called_directly():
    coords = _points(seed=3)
    adata = _adata_from(coords)
    semst.gr.spatial_graph(adata, radius=9.0)
    ref = sq.gr.spatial_neighbors_radius(_adata_from(coords), radius=9.0, copy=True)
    assert (adata.obsp[Key.obsp.spatial_conn] != ref.connectivities).nnz == 0


def test_default_radius_is_factor_times_median_nn_distance():
    coords = _points(seed=1)
    adata = _adata_from(coords)
    semst.gr.spatial_graph(adata)
    D = cdist(coords, coords)
    np.fill_diagonal(D, np.inf)
    expected_r = _spatial.RADIUS_FACTOR * np.median(D.min(axis=1))
    params = adata.uns[Key.uns.spatial_graph]["params"]
    assert params["radius"] == pytest.approx(expected_r)
    np.testing.assert_array_equal(
        adata.obsp[Key.obsp.spatial_conn].toarray().astype(bool), D <= params["radius"]
    )


def test_knn_graph_equals_brute_force_union():
    coords = _points(seed=2)
    adata = _adata_from(coords)
    semst.gr.spatial_graph(adata, mode="knn", n_neighbors=6)
    conn = adata.obsp[Key.obsp.spatial_conn]
    _check_graph(conn)
    np.testing.assert_array_equal(conn.toarray().astype(bool), _brute_knn_union(cdist(coords, coords), 6))
    assert np.diff(conn.indptr).min() >= 6


def _brute_adaptive(D: np.ndarray, k: int) -> float:
    """Smallest pairwise distance t with every degree > 2 and some degree > k, by scanning all distances."""
    n = D.shape[0]
    off = D[~np.eye(n, dtype=bool)]
    for t in np.unique(off):
        deg = (D <= t).sum(axis=1) - 1
        if deg.min() > 2 and deg.max() > k:
            return float(t)
    raise AssertionError("no threshold")


@pytest.mark.parametrize("k", [4, 15])
def test_adaptive_threshold_equals_exhaustive_search(k):
    coords = _points(n=150, seed=4)
    D = cdist(coords, coords)
    t = _brute_adaptive(D, k)
    assert semst.gr.adaptive_threshold(coords, k) == pytest.approx(t, rel=1e-12)
    adata = _adata_from(coords)
    semst.gr.spatial_graph(adata, mode="adaptive", n_neighbors=k)
    conn = adata.obsp[Key.obsp.spatial_conn]
    _check_graph(conn)
    expected = (D <= t) & ~np.eye(len(coords), dtype=bool)
    np.testing.assert_array_equal(conn.toarray().astype(bool), expected)
    deg = np.diff(conn.indptr)
    assert deg.min() > 2 and deg.max() > k


def test_adaptive_cannot_be_met_is_a_clear_error():
    adata = _adata_from(_points(n=10))
    with pytest.raises(ValueError, match="Lower n_neighbors"):
        semst.gr.spatial_graph(adata, mode="adaptive", n_neighbors=9)
    coords = np.vstack([_points(n=20), [[1e3, 1e3], [1e3 + 1, 1e3], [1e3, 1e3 + 1]]])
    lib = ["a"] * 20 + ["b"] * 3
    with pytest.raises(ValueError, match="a slice has only 3 spot"):
        semst.gr.spatial_graph_arrays(coords, mode="adaptive", n_neighbors=5, library=lib)


def test_outlier_spot_making_a_dense_graph_is_refused():
    coords = np.vstack([_points(n=3000, seed=5, scale=1.0), [[1e6, 1e6]]])
    adata = _adata_from(coords)
    before = set(adata.obsp.keys()), set(adata.uns.keys())
    with pytest.raises(ValueError, match="remove outlier spots"):
        semst.gr.spatial_graph(adata, mode="adaptive", n_neighbors=5)
    with pytest.raises(ValueError, match="Check the units"):
        semst.gr.spatial_graph(adata, radius=10.0)
    assert (set(adata.obsp.keys()), set(adata.uns.keys())) == before


def test_isolated_spots_warn():
    coords = np.vstack([_points(n=50), [[500.0, 500.0]]])
    adata = _adata_from(coords)
    with pytest.warns(
        UserWarning, match=r"1 of 51 spots have no spatial neighbour.*in tl\.domains: spatial_mode="
    ):
        semst.gr.spatial_graph(adata, radius=30.0)


@pytest.mark.parametrize("mode", ["radius", "knn", "adaptive"])
def test_slices_never_connect(mode):
    a, b = _points(n=120, seed=6), _points(n=80, seed=7)  # overlapping coordinate ranges
    coords = np.vstack([a, b])
    order = np.random.default_rng(0).permutation(200)  # interleave the slices
    lib = np.array(["A"] * 120 + ["B"] * 80)[order]
    adata = _adata_from(coords[order], slice=lib)  # plain strings, not categorical
    kwargs = {"radius": 15.0} if mode == "radius" else {"n_neighbors": 5}
    semst.gr.spatial_graph(adata, mode=mode, library_key="slice", **kwargs)
    conn = adata.obsp[Key.obsp.spatial_conn].tocoo()
    _check_graph(adata.obsp[Key.obsp.spatial_conn])
    assert np.all(lib[conn.row] == lib[conn.col])
    # each slice's block is the graph of that slice alone (same threshold for the adaptive mode)
    used = adata.uns[Key.uns.spatial_graph]["params"]
    assert used["library_key"] == "slice" and used["n_slices"] == 2
    for name in ("A", "B"):
        idx = np.flatnonzero(lib == name)
        alone_kwargs = {"radius": used["radius"]} if mode != "knn" else {"n_neighbors": 5}
        alone, _, _ = semst.gr.spatial_graph_arrays(
            coords[order][idx], mode="radius" if mode != "knn" else "knn", **alone_kwargs
        )
        block = adata.obsp[Key.obsp.spatial_conn][idx][:, idx]
        assert (block != alone).nnz == 0


def test_library_key_errors():
    adata = _adata_from(_points(n=30), slice=["a"] * 29 + [None])
    with pytest.raises(ValueError, match="missing value"):
        semst.gr.spatial_graph(adata, library_key="slice")
    with pytest.raises(KeyError, match=r"not a column of adata\.obs"):
        semst.gr.spatial_graph(adata, library_key="nope")


def test_stacked_slices_without_library_key_say_both_ways_out():
    pts = _points(60)
    adata = _adata_from(np.r_[pts, pts], slice=np.repeat(["a", "b"], 60))  # two slices, same coordinates
    before = adata.copy()
    for call in (
        lambda a: semst.gr.spatial_graph(a),
        lambda a: semst.tl.domains(a, n_domains=2, n_epochs=1, progress=False),
    ):
        with pytest.raises(
            ValueError, match=r"library_key=.*semst\.gr\.spatial_graph\(adata, radius=\.\.\.\)"
        ):
            call(adata)
        assert set(adata.obsp) == set(before.obsp) and set(adata.uns) == set(before.uns)
    # both ways out work
    semst.gr.spatial_graph(adata, library_key="slice")
    conn = adata.obsp[Key.obsp.spatial_conn]
    assert conn.nnz and not (conn[:60, 60:].nnz or conn[60:, :60].nnz)
    other = before.copy()
    semst.gr.spatial_graph(other, radius=20.0)
    assert other.obsp[Key.obsp.spatial_conn].nnz


def test_a_one_spot_slice_is_named_and_both_ways_out_work():
    adata = _adata_from(_points(41), slice=["a"] * 40 + ["b"])
    with pytest.raises(ValueError, match=r"1 slice\(s\) of adata\.obs\['slice'\] hold a single spot \('b'\)"):
        semst.gr.spatial_graph(adata, library_key="slice")
    assert Key.obsp.spatial_conn not in adata.obsp
    kept = adata[~adata.obs["slice"].isin(["b"])].copy()  # the advice, as written in the message
    semst.gr.spatial_graph(kept, library_key="slice")
    assert kept.obsp[Key.obsp.spatial_conn].nnz
    with pytest.warns(UserWarning, match="1 of 41 spots have no spatial neighbour"):
        semst.gr.spatial_graph(adata, library_key="slice", radius=30.0)


def test_spatial_copy_and_round_trip(tmp_path):
    adata = _adata_from(_points())
    out = semst.gr.spatial_graph(adata, mode="knn", copy=True, key_added="mine")
    assert "mine_connectivities" not in adata.obsp
    assert set(out.obsp) == {"mine_connectivities", "mine_distances"}
    assert out.uns["mine_neighbors"]["connectivities_key"] == "mine_connectivities"
    out.write_h5ad(tmp_path / "g.h5ad")
    back = ad.read_h5ad(tmp_path / "g.h5ad")
    assert (back.obsp["mine_connectivities"] != out.obsp["mine_connectivities"]).nnz == 0
    assert back.uns["mine_neighbors"]["params"]["mode"] == "knn"


def test_three_dimensional_coordinates():
    coords = _points(n=120, dim=3, seed=8)
    conn, _, _ = semst.gr.spatial_graph_arrays(coords, mode="radius", radius=20.0)
    D = cdist(coords, coords)
    np.testing.assert_array_equal(conn.toarray().astype(bool), (D <= 20.0) & (D > 0))


# --------------------------------------------------------------------------------------------- feature graph
def _brute_cosine_knn(X: np.ndarray, k: int) -> np.ndarray:
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    return _brute_knn_union(1.0 - Xn @ Xn.T, k)


@pytest.mark.parametrize("as_sparse", [True, False])
def test_cosine_knn_equals_brute_force(as_sparse):
    rng = np.random.default_rng(0)
    # continuous values with zeros (like the scaled matrix): no ties between similarities
    X = (rng.gamma(0.6, 1.0, size=(200, 60)) * (rng.random((200, 60)) < 0.3)).astype(np.float32)
    X[:, 0] += 0.1
    G = semst.gr.cosine_knn_graph(sparse.csr_matrix(X) if as_sparse else X, 7, method="exact")
    _check_graph(G)
    np.testing.assert_array_equal(G.toarray().astype(bool), _brute_cosine_knn(X.astype(np.float64), 7))


def test_cosine_knn_on_integer_counts_equal_up_to_ties():
    # raw-count-like rows tie often; the chosen neighbours must still carry the top-k similarity values
    rng = np.random.default_rng(0)
    X = rng.poisson(0.5, size=(200, 60)).astype(np.float32)
    X[:, 0] += 1
    ind, _ = semst.gr.knn_indices(sparse.csr_matrix(X), 7, method="exact")
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn.astype(np.float64) @ Xn.T.astype(np.float64)
    np.fill_diagonal(S, -np.inf)
    chosen = np.sort(np.take_along_axis(S, ind, axis=1), axis=1)
    best = np.sort(S, axis=1)[:, -7:]
    np.testing.assert_allclose(chosen, best, rtol=1e-5)


def test_sparse_products_path_equals_dense_path(monkeypatch):
    rng = np.random.default_rng(1)
    X = sparse.random(200, 500, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    X = X + sparse.eye(200, 500, dtype=np.float32, format="csr")
    dense = semst.gr.cosine_knn_graph(X, 5, method="exact")
    monkeypatch.setattr(_feature, "_DENSE_BYTES", 0)  # never densify: sparse products, small blocks
    monkeypatch.setattr(utils, "BLOCK_NNZ", 50)  # row normalisation in many blocks too
    monkeypatch.setattr(_feature, "_BLOCK_BYTES", 200 * 4 * 17)
    sparse_path = semst.gr.cosine_knn_graph(X, 5, method="exact")
    assert (dense != sparse_path).nnz == 0
    np.testing.assert_array_equal(
        dense.toarray().astype(bool), _brute_cosine_knn(X.toarray().astype(np.float64), 5)
    )


def _clustered(n=3000, dim=40, n_groups=12, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_groups, dim))
    labels = rng.integers(0, n_groups, n)
    return (centers[labels] + 0.6 * rng.normal(size=(n, dim))).astype(np.float32)


def test_ivf_index_recall_and_exact_when_few_cells():
    Y, _ = _feature._normalize_rows(_clustered())
    exact = _feature._knn_brute(Y, 10)
    # few cells: every cell probes all others -> identical to brute force
    few = _feature._knn_ivf(Y, 10, seed=0, cell_size=1000, n_probe=12)
    assert all(set(a) == set(b) for a, b in zip(few, exact))
    # many cells (12 of 46 searched per cell): approximate, measured recall
    many = _feature._knn_ivf(Y, 10, seed=0, cell_size=64, n_probe=12)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(many, exact)])
    assert recall > 0.8
    assert not (many == np.arange(len(Y))[:, None]).any()  # never itself


def test_ivf_cells_cover_every_row_in_cells_of_about_the_asked_size():
    Y, _ = _feature._normalize_rows(_clustered(n=6000, seed=4))
    centers, assign = _feature._cells(Y, 6000 // 64, 64, seed=1)
    again = _feature._cells(Y, 6000 // 64, 64, seed=1)
    np.testing.assert_array_equal(assign, again[1])
    np.testing.assert_array_equal(centers, again[0])
    assert 0.7 * 93 <= centers.shape[0] <= 1.3 * 93  # about n_cells cells over the coarse groups
    sizes = np.bincount(assign, minlength=centers.shape[0])
    assert sizes.sum() == 6000 and assign.min() >= 0
    assert np.median(sizes) <= 2 * 64 and sizes.max() <= 8 * 64
    # every row lies in the nearest cell of its own coarse group: never farther than the group's best
    d_own = ((Y - centers[assign]) ** 2).sum(axis=1)
    d_all = ((Y[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    assert np.mean(d_own <= d_all + 1e-5) > 0.9  # group borders cost a few rows their global nearest cell


def test_svd_fitted_on_a_sample_projects_every_row_on_the_same_subspace():
    rng = np.random.default_rng(5)
    X = np.abs(rng.normal(size=(2000, 6))) @ np.abs(rng.normal(size=(6, 80))) + 1e-4 * rng.random((2000, 80))
    Xn, _ = _feature._normalize_rows(sparse.csr_matrix(X.astype(np.float32)))
    full = _feature._reduce(Xn, 10, seed=0)
    part = _feature._reduce(Xn, 10, seed=0, max_fit=300)
    np.testing.assert_array_equal(part, _feature._reduce(Xn, 10, seed=0, max_fit=300))
    assert part.shape == full.shape == (2000, 10)
    # rank 6 < 10 components: both spans hold the data, so both keep its cosines
    idx = rng.choice(2000, 200, replace=False)
    np.testing.assert_allclose(part[idx] @ part[idx].T, full[idx] @ full[idx].T, atol=2e-3)


def test_svd_method_is_deterministic_and_sane(monkeypatch):
    X = sparse.csr_matrix(np.abs(_clustered(n=2500, dim=120, seed=2)))
    monkeypatch.setattr(_feature, "CELL_SIZE", 64)  # several cells even on 2500 rows
    monkeypatch.setattr(_feature, "SVD_FIT_MAX", 1000)  # singular vectors fitted on 1000 of the rows
    g1 = semst.gr.cosine_knn_graph(X, 8, method="svd", n_components=20, seed=3)
    g2 = semst.gr.cosine_knn_graph(X, 8, method="svd", n_components=20, seed=3)
    _check_graph(g1)
    assert (g1 != g2).nnz == 0
    assert np.diff(g1.indptr).min() >= 8


def test_auto_method_switches_on_size(monkeypatch):
    X = np.abs(_clustered(n=300, dim=20))
    _, info = semst.gr.knn_indices(X, 5)
    assert info["method"] == "exact"
    monkeypatch.setattr(_feature, "EXACT_MAX_OBS", 100)
    _, info = semst.gr.knn_indices(X, 5)
    assert info["method"] == "svd" and info["n_components"] == 20  # fewer features than components: kept


def test_zero_rows_warn_and_never_self():
    X = np.abs(_clustered(n=100, dim=10))
    X[3] = 0
    with pytest.warns(UserWarning, match="1 of 100 spots have an all-zero feature row"):
        ind, _ = semst.gr.knn_indices(X, 4)
    assert 3 not in ind[3]


def test_feature_matrix_errors():
    with pytest.raises(ValueError, match="NaN"):
        semst.gr.cosine_knn_graph(np.array([[1.0, np.nan], [1.0, 2.0], [0.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="only 3 spots"):
        semst.gr.cosine_knn_graph(np.eye(3), 3)
    with pytest.raises(ValueError, match="not a valid choice"):
        semst.gr.cosine_knn_graph(np.eye(3), 1, method="annoy")


def test_feature_graph_on_demo_preprocesses_on_the_fly(tmp_path):
    adata = semst.datasets.demo()
    before_layers, before_var = set(adata.layers), list(adata.var.columns)
    semst.gr.feature_graph(adata)
    # nothing but the graph is written
    assert set(adata.layers) == before_layers and list(adata.var.columns) == before_var
    G = adata.obsp[Key.obsp.feature_conn]
    _check_graph(G)
    params = adata.uns[Key.uns.feature_graph]["params"]
    assert (
        params["method"] == "exact" and params["n_neighbors"] == 14 and params["source"].startswith("counts")
    )
    assert np.diff(G.indptr).min() >= 14
    # the same graph as the preprocessed layer gives, and as the pure helper gives
    semst.pp.preprocess(adata)
    other = semst.gr.feature_graph(adata, copy=True)
    assert (other.obsp[Key.obsp.feature_conn] != G).nnz == 0
    pre = semst.pp.preprocess(adata, inplace=False)
    assert (semst.gr.cosine_knn_graph(pre.X, 14) != G).nnz == 0
    # neighbours in expression share the annotated layer far more often than chance (sum of squared layer
    # proportions: 0.18); measured 0.34
    g = G.tocoo()
    lab = adata.obs[semst.datasets.DEMO_ANNOTATION].to_numpy()
    assert np.mean(lab[g.row] == lab[g.col]) > 0.3
    adata.write_h5ad(tmp_path / "f.h5ad")
    back = ad.read_h5ad(tmp_path / "f.h5ad")
    assert (back.obsp[Key.obsp.feature_conn] != G).nnz == 0
    assert back.uns[Key.uns.feature_graph]["params"]["n_neighbors"] == 14


def test_feature_graph_sources_and_keys():
    adata = _adata_from(_points(n=150))
    adata.obsm["X_pca"] = np.random.default_rng(0).normal(size=(150, 8))
    semst.gr.feature_graph(adata, use_rep="X_pca", n_neighbors=5, key_added="pca_connectivities")
    assert adata.uns["pca_neighbors"]["params"]["source"] == "obsm/X_pca"
    Xp = adata.obsm["X_pca"]
    np.testing.assert_array_equal(
        adata.obsp["pca_connectivities"].toarray().astype(bool), _brute_cosine_knn(Xp, 5)
    )
    semst.gr.feature_graph(adata, layer=None, n_neighbors=5, key_added="x_graph")
    assert adata.uns["x_graph_neighbors"]["params"]["source"] == "X"

    # the spatial graph (and squidpy's record of it) is never replaced by a feature graph
    semst.gr.spatial_graph(adata, mode="knn", n_neighbors=4)
    spatial = adata.obsp[Key.obsp.spatial_conn].copy()
    record = dict(adata.uns[Key.uns.spatial_graph])
    pattern = r"would overwrite adata\.obsp\['spatial_connectivities'\] and adata\.uns\['spatial_neighbors'\]"
    with pytest.raises(ValueError, match=pattern):
        semst.gr.feature_graph(adata, layer=None, n_neighbors=5, key_added=Key.obsp.spatial_conn)
    assert (adata.obsp[Key.obsp.spatial_conn] != spatial).nnz == 0
    assert adata.uns[Key.uns.spatial_graph].keys() == record.keys()
    with pytest.raises(ValueError, match=r"spatial_connectivities"):  # the copy would lose it too
        semst.gr.feature_graph(adata, n_neighbors=5, key_added=Key.obsp.spatial_conn, copy=True)
    # its own earlier graph under a key of the user's is written again; someone else's is not
    semst.gr.feature_graph(adata, layer=None, n_neighbors=7, key_added="x_graph")
    assert adata.uns["x_graph_neighbors"]["params"]["n_neighbors"] == 7
    adata.obsp["other_connectivities"] = adata.obsp["x_graph"].copy()
    with pytest.raises(ValueError, match=r"adata\.obsp\['other_connectivities'\].*another key_added="):
        semst.gr.feature_graph(adata, layer=None, n_neighbors=5, key_added="other_connectivities")


def test_default_spatial_graph_on_demo(tmp_path):
    adata = semst.datasets.demo()
    semst.gr.spatial_graph(adata)
    params = adata.uns[Key.uns.spatial_graph]["params"]
    # Visium, 4 spot pitches: 60 neighbours inside the tissue, fewer at the crop's border
    assert 130 < params["median_nn"] < 145
    assert 45 < params["mean_degree"] <= 60 and params["max_degree"] == 60
    adata.write_h5ad(tmp_path / "s.h5ad")
    back = ad.read_h5ad(tmp_path / "s.h5ad")
    assert back.uns[Key.uns.spatial_graph]["params"]["radius_rule"] == params["radius_rule"]
    assert (back.obsp[Key.obsp.spatial_dist] != adata.obsp[Key.obsp.spatial_dist]).nnz == 0


@pytest.mark.slow
def test_spatial_modes_on_shared_dlpfc(shared_data, tmp_path):
    adata = ad.read_h5ad(shared_data / "dlpfc_151673.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no isolated spot
        semst.gr.spatial_graph(adata, radius=560.0)
    assert adata.uns[Key.uns.spatial_graph]["params"]["max_degree"] == 60
    semst.gr.spatial_graph(adata, mode="adaptive", key_added="adaptive")
    deg = np.diff(adata.obsp["adaptive_connectivities"].indptr)
    assert deg.min() > 2 and deg.max() > 15
    semst.gr.spatial_graph(adata, mode="knn", key_added="knn")
    adata.write_h5ad(tmp_path / "dlpfc_graphs.h5ad")


def test_building_a_graph_does_not_print_squidpys_docstring_warnings():
    """squidpy 1.8's import prints two docrep ``SyntaxWarning`` lines; a graph built through us must not."""
    import subprocess
    import sys

    def stderr_of(code: str) -> str:
        run = subprocess.run(
            [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
        return run.stderr

    if "is not a valid key" not in stderr_of("import squidpy"):
        pytest.skip("this squidpy imports without docrep's SyntaxWarning: nothing to silence")
    err = stderr_of(
        "import warnings, numpy as np, anndata as ad, semst_sc as semst\n"
        "a = ad.AnnData(np.ones((40, 3)), obsm={'spatial': np.random.default_rng(0).random((40, 2))})\n"
        "semst.gr.spatial_graph(a, mode='knn', n_neighbors=6)\n"
        "assert 'spatial_connectivities' in a.obsp\n"
        "# the silencing filter lived only during the import: none is left in the process's filters\n"
        "left = [f for f in warnings.filters if f[1] is not None and 'valid key' in f[1].pattern]\n"
        "assert not left, left\n"
    )
    assert "is not a valid key" not in err, err
