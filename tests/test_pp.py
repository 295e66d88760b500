"""Preprocessing: equals a hand computation, equals scanpy's reference pipeline, stays sparse, X untouched."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import semst_sc as semst
from semst_sc._constants import Default, Key
from semst_sc._validation import get_counts
from semst_sc.pp import Preprocessed, preprocess_arrays


def _counts(n_obs=300, n_vars=200, seed=0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    means = rng.lognormal(-1.0, 1.2, size=n_vars)
    X = rng.poisson(means[None, :] * rng.lognormal(0, 0.4, size=(n_obs, 1))).astype(np.float32)
    X[:, 0] += 1  # no empty spot
    adata = ad.AnnData(
        X=sparse.csr_matrix(X),
        obs=pd.DataFrame(index=[f"s{i}" for i in range(n_obs)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_vars)]),
    )
    adata.obsm[Key.obsm.spatial] = rng.uniform(0, 1000, size=(n_obs, 2))
    return adata


def test_hand_computation_on_a_small_matrix():
    # 4 spots x 3 genes, every gene kept (n_top_genes >= 3 and min_cells=1): no gene selection involved.
    X = np.array([[1, 0, 3], [2, 2, 0], [0, 1, 1], [4, 0, 0]], dtype=np.float32)
    pre = preprocess_arrays(
        sparse.csr_matrix(X), ["a", "b", "c"], n_top_genes=3, min_cells=1, target_sum=4.0, max_value=None
    )
    # row sums 4, 4, 2, 4 -> scaled to sum 4: rows 1, 2, 4 unchanged, row 3 doubled
    norm = np.array([[1, 0, 3], [2, 2, 0], [0, 2, 2], [4, 0, 0]], dtype=np.float64)
    # per-gene unbiased standard deviations, no centring, by hand:
    #   a = [1, 2, 0, 4]: mean 1.75, sum of squares 21, var (21 - 4 * 1.75^2) / 3 = 35/12
    #   b = [0, 2, 2, 0]: mean 1,    sum of squares 8,  var (8 - 4) / 3 = 4/3
    #   c = [3, 0, 2, 0]: mean 1.25, sum of squares 13, var (13 - 6.25) / 3 = 2.25
    std = np.array([np.sqrt(35 / 12), np.sqrt(4 / 3), 1.5])
    np.testing.assert_allclose(norm.std(axis=0, ddof=1), std)
    np.testing.assert_allclose(pre.X.toarray(), norm / std, rtol=1e-6)
    assert list(pre.genes) == ["a", "b", "c"]
    np.testing.assert_array_equal(pre.counts.toarray(), X)
    np.testing.assert_allclose(pre.size_factors, [1, 1, 0.5, 1])  # HVG sums / median (4)
    # clipping at max_value
    clipped = preprocess_arrays(
        sparse.csr_matrix(X), ["a", "b", "c"], n_top_genes=3, min_cells=1, target_sum=4.0, max_value=2.0
    )
    np.testing.assert_allclose(clipped.X.toarray(), np.minimum(norm / std, 2.0), rtol=1e-6)


def test_equals_scanpy_reference_pipeline():
    adata = _counts()
    pre = preprocess_arrays(get_counts(adata), adata.var_names, n_top_genes=50, min_cells=10)
    ref = adata.copy()
    sc.pp.filter_genes(ref, min_cells=10)
    sc.pp.highly_variable_genes(ref, flavor="seurat_v3", n_top_genes=50)
    ref = ref[:, ref.var["highly_variable"]].copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.scale(ref, zero_center=False, max_value=10)
    assert list(pre.genes) == list(ref.var_names)
    ref_X = ref.X.toarray() if sparse.issparse(ref.X) else np.asarray(ref.X)
    np.testing.assert_allclose(pre.X.toarray(), ref_X, rtol=1e-5, atol=1e-6)


def test_preprocess_inplace_writes_layer_and_hvg_and_keeps_x(tmp_path):
    adata = _counts()
    X_before = adata.X.copy()
    assert semst.pp.preprocess(adata, n_top_genes=40, min_cells=5) is None
    assert (adata.X != X_before).nnz == 0 and adata.X.dtype == X_before.dtype
    hvg = adata.var[Key.var.hvg]
    assert hvg.dtype == bool and hvg.sum() == 40
    layer = adata.layers[Key.layers.scaled]
    assert isinstance(layer, sparse.csr_matrix) and layer.dtype == np.float32 and layer.shape == adata.shape
    assert layer[:, ~hvg.to_numpy()].nnz == 0
    pre = semst.pp.preprocess(adata, n_top_genes=40, min_cells=5, inplace=False)
    np.testing.assert_array_equal(layer[:, hvg.to_numpy()].toarray(), pre.X.toarray())
    # h5ad round trip
    adata.write_h5ad(tmp_path / "pp.h5ad")
    back = ad.read_h5ad(tmp_path / "pp.h5ad")
    np.testing.assert_array_equal(back.layers[Key.layers.scaled].toarray(), layer.toarray())
    assert back.var[Key.var.hvg].dtype == bool


def test_inplace_false_returns_dataclass_and_leaves_adata():
    adata = _counts()
    before = adata.copy()
    pre = semst.pp.preprocess(adata, n_top_genes=30, min_cells=5, inplace=False)
    assert isinstance(pre, Preprocessed)
    assert pre.X.shape == (adata.n_obs, 30) and pre.counts.shape == (adata.n_obs, 30)
    assert isinstance(pre.X, sparse.csr_matrix) and pre.X.dtype == np.float32
    assert isinstance(pre.genes, pd.Index) and pre.genes.isin(adata.var_names).all()
    np.testing.assert_array_equal(pre.counts.toarray(), adata[:, pre.genes].X.toarray())
    sums = np.asarray(pre.counts.sum(1)).ravel()
    np.testing.assert_allclose(pre.size_factors, sums / np.median(sums), rtol=1e-6)
    assert Key.layers.scaled not in adata.layers and Key.var.hvg not in adata.var
    assert (adata.X != before.X).nnz == 0


def test_counts_from_a_layer_and_custom_key():
    adata = _counts()
    adata.layers["counts"] = adata.X.copy()
    adata.X = np.log1p(adata.X.toarray())  # X holds something else
    semst.pp.preprocess(adata, layer="counts", n_top_genes=20, min_cells=5, key_added="mine")
    assert "mine" in adata.layers and adata.var[Key.var.hvg].sum() == 20
    counts = adata.layers["counts"].copy()
    adata.layers["theirs"] = adata.X.copy()
    for key, said in (("counts", "the counts it reads"), ("theirs", "which it did not write")):
        with pytest.raises(ValueError, match=rf"would overwrite adata\.layers\['{key}'\].*{said}"):
            semst.pp.preprocess(adata, layer="counts", n_top_genes=20, min_cells=5, key_added=key)
    assert (adata.layers["counts"] != counts).nnz == 0
    np.testing.assert_array_equal(adata.layers["theirs"], adata.X)
    semst.pp.preprocess(adata, layer="counts", n_top_genes=20, min_cells=5)  # the default key, twice
    semst.pp.preprocess(adata, layer="counts", n_top_genes=20, min_cells=5)
    assert list(adata.uns[Key.uns.preprocess]["layers"]) == sorted([Key.layers.scaled, "mine"])


def test_preprocess_records_its_parameters_and_may_rewrite_its_own_layer(tmp_path):
    adata = _counts()
    semst.pp.preprocess(adata, n_top_genes=20, min_cells=5, key_added="mine")
    record = adata.uns[Key.uns.preprocess]
    assert record["params"]["n_top_genes"] == 20 and record["params"]["min_cells"] == 5
    assert record["params"]["layer"] == "X" and record["params"]["key_added"] == "mine"
    assert list(record["layers"]) == ["mine"]
    # a later call, here after an h5ad round trip, may write the layer it wrote again, with other settings
    adata.write_h5ad(tmp_path / "pp.h5ad")
    back = ad.read_h5ad(tmp_path / "pp.h5ad")
    first = back.layers["mine"].copy()
    semst.pp.preprocess(back, n_top_genes=10, min_cells=5, key_added="mine")
    assert back.var[Key.var.hvg].sum() == 10 and back.uns[Key.uns.preprocess]["params"]["n_top_genes"] == 10
    assert (back.layers["mine"] != first).nnz > 0 and list(back.uns[Key.uns.preprocess]["layers"]) == ["mine"]
    # the layer it wrote is still never read as counts and written over in one call
    with pytest.raises(ValueError, match=r"would overwrite adata\.layers\['mine'\], the counts it reads"):
        semst.pp.preprocess(back, layer="mine", key_added="mine")
    # a layer it wrote and the user removed leaves the record at the next call
    del back.layers["mine"]
    semst.pp.preprocess(back, n_top_genes=10, min_cells=5)
    assert list(back.uns[Key.uns.preprocess]["layers"]) == [Key.layers.scaled]
    # inplace=False writes nothing, the record included
    fresh = _counts()
    semst.pp.preprocess(fresh, n_top_genes=10, min_cells=5, inplace=False)
    assert Key.uns.preprocess not in fresh.uns


def test_small_panel_caps_n_top_genes_and_lowers_min_cells():
    adata = _counts(n_obs=150, n_vars=33)
    pre = preprocess_arrays(get_counts(adata), adata.var_names)  # defaults: 2000 HVGs, min_cells 100
    detected = np.asarray((adata.X > 0).sum(0)).ravel()
    assert pre.X.shape[1] == int((detected > 0).sum())
    assert (
        pre.params["n_top_genes"] == pre.X.shape[1]
        and pre.params["n_top_genes_requested"] == Default.n_top_genes == 2000
    )
    assert pre.params["min_cells"] <= 100


def test_min_cells_lowered_only_as_far_as_needed():
    adata = _counts(n_obs=200, n_vars=300)
    detected = np.asarray((adata.X > 0).sum(0)).ravel()
    want = 250
    pre = preprocess_arrays(get_counts(adata), adata.var_names, n_top_genes=want, min_cells=150)
    assert pre.params["min_cells"] == np.sort(detected)[::-1][want - 1]
    assert pre.X.shape[1] == want


def test_spot_without_hvg_counts_gives_zero_row_and_warning():
    X = np.zeros((30, 12), dtype=np.float32)
    rng = np.random.default_rng(1)
    X[:, :10] = rng.poisson(3, size=(30, 10))
    X[X.sum(1) == 0, 0] = 1
    X[5] = 0
    X[5, 11] = 4  # spot 5 only expresses gene 11, detected in one spot only
    with pytest.warns(UserWarning, match="1 of 30 spots have no count on the 10 highly variable genes"):
        pre = preprocess_arrays(
            sparse.csr_matrix(X), [f"g{i}" for i in range(12)], n_top_genes=10, min_cells=2
        )
    assert "g11" not in pre.genes
    assert pre.X[5].nnz == 0 and np.isfinite(pre.X.data).all()
    assert pre.size_factors[5] == 0


def test_real_demo_slice(tmp_path):
    adata = semst.datasets.demo()
    X_before = adata.X.copy()
    semst.pp.preprocess(adata)
    assert adata.var[Key.var.hvg].sum() == Default.n_top_genes == 2000
    layer = adata.layers[Key.layers.scaled]
    assert layer.max() <= 10.0 + 1e-6 and layer.min() >= 0
    assert (adata.X != X_before).nnz == 0
    adata.write_h5ad(tmp_path / "demo_pp.h5ad")


@pytest.mark.slow
def test_small_panels_of_shared_data(shared_data):
    for name, n_top in (("starmap_mvc.h5ad", 128), ("osmfish_sscortex.h5ad", 3000)):
        adata = ad.read_h5ad(shared_data / name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no NaN / division warning
            pre = semst.pp.preprocess(adata, n_top_genes=n_top, inplace=False)
        assert pre.X.shape[1] == min(n_top, adata.n_vars)
        assert np.isfinite(pre.X.data).all()


def test_row_blocks_cover_every_row_once():
    from semst_sc._utils import block_rows, row_blocks

    indptr = np.array([0, 3, 3, 10, 11, 11, 40, 41])  # an empty row, rows larger than the budget
    blocks = list(row_blocks(indptr, max_nnz=4))
    assert blocks[0][0] == 0 and blocks[-1][1] == 7
    for (a, b, lo, hi), nxt in zip(blocks, [*blocks[1:], None], strict=True):
        assert b > a and lo == indptr[a] and hi == indptr[b]
        assert hi - lo <= 4 or b == a + 1
        if nxt is not None:
            assert nxt[0] == b
        np.testing.assert_array_equal(
            np.bincount(block_rows(indptr, a, b), minlength=b - a), np.diff(indptr[a : b + 1])
        )


def test_blockwise_preprocessing_equals_one_block(monkeypatch):
    import semst_sc._utils as utils

    adata = _counts()
    one = preprocess_arrays(get_counts(adata), adata.var_names, n_top_genes=40, min_cells=5)
    monkeypatch.setattr(utils, "BLOCK_NNZ", 97)
    many = preprocess_arrays(get_counts(adata), adata.var_names, n_top_genes=40, min_cells=5)
    np.testing.assert_array_equal(one.X.toarray(), many.X.toarray())
    np.testing.assert_array_equal(one.size_factors, many.size_factors)


def test_too_few_genes_for_seurat_v3_is_explained():
    adata = _counts(n_obs=40, n_vars=6)
    with pytest.raises(
        ValueError, match=r"40 spots x 6 genes .* Keep every gene instead \(n_top_genes=6 or more\)"
    ):
        semst.pp.preprocess(adata, n_top_genes=3, min_cells=1)
    assert Key.layers.scaled not in adata.layers


def test_too_few_spots_for_seurat_v3_is_explained():
    # 20 spots of the real demo slice: the loess fit fails for want of spots, not of genes
    adata = semst.datasets.demo()[:20].copy()
    with pytest.raises(ValueError, match=r"on 20 spots x \d+ genes \((?!b').*or give it more spots"):
        semst.pp.preprocess(adata)
    assert Key.layers.scaled not in adata.layers
    semst.pp.preprocess(adata, n_top_genes=adata.n_vars)  # the advice works
    assert Key.layers.scaled in adata.layers


def test_bad_parameters():
    adata = _counts()
    for kwargs, error in (
        ({"n_top_genes": 0}, ValueError),
        ({"n_top_genes": 2.5}, TypeError),
        ({"min_cells": -1}, ValueError),
        ({"target_sum": 0}, ValueError),
        ({"max_value": -1.0}, ValueError),
    ):
        with pytest.raises(error):
            semst.pp.preprocess(adata, **kwargs)
    assert Key.layers.scaled not in adata.layers
