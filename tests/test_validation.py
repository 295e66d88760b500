"""Input checks: every bad input raises the documented error type, says how to fix it, and changes nothing."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import semst_sc as semst
from semst_sc._constants import SPATIAL_MODES, Key
from semst_sc._validation import (
    check_anndata,
    check_choice,
    check_matrix,
    check_n_neighbors,
    check_obsm,
    check_spatial,
    get_counts,
)


def assert_equal(a: ad.AnnData, b: ad.AnnData) -> None:
    """``a`` and ``b`` hold the same data in every slot (used to show a failing call changed nothing)."""
    assert a.shape == b.shape
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    Xa, Xb = (x.toarray() if sparse.issparse(x) else np.asarray(x) for x in (a.X, b.X))
    np.testing.assert_array_equal(Xa, Xb)
    for slot in ("obsm", "obsp", "layers", "varm"):
        ma, mb = getattr(a, slot), getattr(b, slot)
        assert set(ma) == set(mb), slot
        for key in ma:
            va, vb = ma[key], mb[key]
            va, vb = (v.toarray() if sparse.issparse(v) else np.asarray(v) for v in (va, vb))
            np.testing.assert_array_equal(va, vb)
    assert set(a.uns) == set(b.uns)


def _adata(n_obs: int = 60, n_vars: int = 40, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = sparse.csr_matrix(rng.poisson(1.0, size=(n_obs, n_vars)).astype(np.float32))
    X[np.flatnonzero(np.asarray(X.sum(1)).ravel() == 0), 0] = 1.0
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=[f"s{i}" for i in range(n_obs)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_vars)]),
    )
    adata.obsm[Key.obsm.spatial] = rng.uniform(0, 100, size=(n_obs, 2))
    return adata


# ------------------------------------------------------------------------------------------- check_anndata
def test_check_anndata_accepts_real_anndata():
    check_anndata(_adata(), fn="f")


def test_not_anndata_is_typeerror():
    with pytest.raises(TypeError, match=r"expects an anndata\.AnnData, got numpy\.ndarray"):
        check_anndata(np.zeros((3, 3)), fn="semst.x")


def test_view_is_valueerror_naming_copy():
    adata = _adata()
    with pytest.raises(ValueError, match=r"call `\.copy\(\)` first"):
        check_anndata(adata[:10], fn="semst.x")


@pytest.mark.parametrize("axis", ["var", "obs"])
def test_duplicated_names_suggest_make_unique(axis):
    adata = _adata()
    names = list(getattr(adata, f"{axis}_names"))
    names[3] = names[2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setattr(adata, f"{axis}_names", names)
    before = adata.copy()
    with pytest.raises(ValueError, match=rf"{axis}_names_make_unique\(\)"):
        check_anndata(adata, fn="semst.x")
    assert_equal(adata, before)


# -------------------------------------------------------------------------------------------- check_spatial
def test_check_spatial_returns_float64_copy_semantics():
    adata = _adata()
    adata.obsm[Key.obsm.spatial] = adata.obsm[Key.obsm.spatial].astype(np.float32)
    coords = check_spatial(adata)
    assert coords.dtype == np.float64 and coords.shape == (adata.n_obs, 2)
    assert adata.obsm[Key.obsm.spatial].dtype == np.float32  # not modified


def test_missing_spatial_is_keyerror_explaining_what_to_put():
    adata = _adata()
    del adata.obsm[Key.obsm.spatial]
    with pytest.raises(KeyError, match="N x 2 array of spot positions"):
        check_spatial(adata)


@pytest.mark.parametrize("shape", [(60, 1), (60, 4)])
def test_wrong_spatial_shape(shape):
    adata = _adata()
    adata.obsm[Key.obsm.spatial] = np.zeros(shape)
    with pytest.raises(ValueError, match=r"must be N x 2"):
        check_spatial(adata)


def test_three_dimensional_coordinates_are_fine():
    adata = _adata()
    adata.obsm[Key.obsm.spatial] = np.random.default_rng(0).normal(size=(adata.n_obs, 3))
    assert check_spatial(adata).shape == (adata.n_obs, 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_coordinates(bad):
    adata = _adata()
    adata.obsm[Key.obsm.spatial][5, 1] = bad
    with pytest.raises(ValueError, match=r"NaN or infinite coordinates for 1 spot\(s\) \(first: 's5'\)"):
        check_spatial(adata)


def test_non_numeric_coordinates_are_typeerror():
    adata = _adata()
    adata.obsm[Key.obsm.spatial] = np.full((adata.n_obs, 2), "a", dtype=object)
    with pytest.raises(TypeError, match="must hold numbers"):
        check_spatial(adata)


# ----------------------------------------------------------------------------------------------- get_counts
def test_get_counts_returns_float32_csr_and_shares_nothing_it_changes():
    adata = _adata()
    adata.X = adata.X.astype(np.int64)
    before = adata.copy()
    counts = get_counts(adata)
    assert isinstance(counts, sparse.csr_matrix) and counts.dtype == np.float32
    assert (counts != before.X).nnz == 0
    assert_equal(adata, before)


def test_get_counts_dense_and_layer():
    adata = _adata()
    adata.layers["counts"] = adata.X.copy()
    adata.X = adata.X.toarray()
    assert (get_counts(adata) != adata.layers["counts"]).nnz == 0
    assert (get_counts(adata, layer="counts") != adata.layers["counts"]).nnz == 0


def test_missing_layer_is_keyerror():
    with pytest.raises(KeyError, match="layer 'counts' not found"):
        get_counts(_adata(), layer="counts")


@pytest.mark.parametrize(
    ("value", "match"),
    [(np.nan, "NaN or infinite"), (-1.0, "negative values"), (0.5, "non-integer values")],
)
@pytest.mark.parametrize("dense", [False, True])
def test_bad_count_values(value, match, dense):
    adata = _adata()
    X = adata.X.toarray()
    X[2, 3] = value
    adata.X = X if dense else sparse.csr_matrix(X)
    before = adata.copy()
    with pytest.raises(ValueError, match=match) as err:
        get_counts(adata)
    assert "pass layer='counts'" in str(err.value) and "tl.domains" in str(err.value)
    assert_equal(adata, before)


def test_negative_integer_counts():
    adata = _adata()
    X = adata.X.toarray().astype(np.int32)
    X[0, 0] = -2
    adata.X = sparse.csr_matrix(X)
    with pytest.raises(ValueError, match="negative values"):
        get_counts(adata)


def test_log_normalised_data_is_refused():
    adata = _adata()
    adata.X = adata.X.log1p()
    with pytest.raises(ValueError, match="non-integer"):
        get_counts(adata)


def test_empty_spots_are_counted_and_filter_suggested():
    adata = _adata()
    X = adata.X.tolil()
    X[[4, 7], :] = 0
    adata.X = X.tocsr()
    before = adata.copy()
    with pytest.raises(ValueError, match=r"2 of 60 spots have no counts.*first: 's4'.*filter_cells"):
        get_counts(adata)
    assert_equal(adata, before)


def test_no_genes():
    adata = _adata()[:, []].copy()
    with pytest.raises(ValueError, match="at least one spot and one gene"):
        get_counts(adata)


def test_values_scanned_in_blocks(monkeypatch):
    # a bad value in a later block is still found (block size lowered to exercise the loop)
    import semst_sc._validation as v

    monkeypatch.setattr(v, "_BLOCK", 7)
    adata = _adata()
    adata.X.data[-1] = 0.25
    with pytest.raises(ValueError, match="non-integer"):
        get_counts(adata)


# ---------------------------------------------------------------------------------------- small checkers
def test_check_choice_lists_options():
    check_choice("mode", "knn", SPATIAL_MODES)
    with pytest.raises(
        ValueError, match="mode='grid' is not a valid choice; use one of 'radius', 'knn', 'adaptive'"
    ):
        check_choice("mode", "grid", SPATIAL_MODES)


def test_check_n_neighbors():
    assert check_n_neighbors(20, np.int64(5), "the graph") == 5
    with pytest.raises(ValueError, match="only 10 spots; it needs at least 16"):
        check_n_neighbors(10, 15, "the graph")
    with pytest.raises(ValueError, match="at least 1"):
        check_n_neighbors(10, 0, "the graph")
    with pytest.raises(TypeError, match="must be an integer"):
        check_n_neighbors(10, 2.5, "the graph")
    with pytest.raises(TypeError, match="must be an integer"):
        check_n_neighbors(10, True, "the graph")


def test_check_obsm():
    adata = _adata()
    adata.obsm["X_llm"] = np.ones((adata.n_obs, 4), dtype=np.float32)
    assert check_obsm(adata, "X_llm", n_obs=adata.n_obs, made_by="semst.tl.semantic_embedding").shape == (
        60,
        4,
    )
    with pytest.raises(KeyError, match=r"made by semst\.tl\.semantic_embedding"):
        check_obsm(adata, "X_other", n_obs=adata.n_obs, made_by="semst.tl.semantic_embedding")
    with pytest.raises(ValueError, match="expected 59 rows"):
        check_obsm(adata, "X_llm", n_obs=59, made_by="f")
    adata.obsm["X_llm"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_obsm(adata, "X_llm", n_obs=adata.n_obs, made_by="f")


def test_count_errors_say_where_the_counts_may_be():
    adata = _adata()
    counts = adata.X.copy()
    adata.X = adata.X.astype(np.float32) * 0.5
    with pytest.raises(
        ValueError,
        match=r"non-integer.*pass layer='counts' \(the layer's name\) if they are in a layer; or, for a "
        r"matrix already normalised, pass preprocess=False to semst\.tl\.domains",
    ):
        get_counts(adata)
    adata.layers["counts"] = counts
    adata.raw = ad.AnnData(X=counts, obs=adata.obs[[]], var=adata.var[[]])
    with pytest.raises(
        ValueError, match=r"\(layers: 'counts'\); adata\.raw is set.*adata\.raw\.to_adata\(\)"
    ):
        get_counts(adata)
    assert get_counts(adata, layer="counts").nnz == sparse.csr_matrix(counts).nnz


def test_check_matrix():
    dense = np.arange(12, dtype=np.float32).reshape(4, 3)
    for value in (dense, sparse.csr_matrix(dense), pd.DataFrame(dense)):
        np.testing.assert_array_equal(check_matrix(value, name="`h`", n_obs=4, fix="Fix it."), dense)
    with pytest.raises(ValueError, match=r"`h` has shape \(4, 0\); expected 4 rows .* Fix it\."):
        check_matrix(np.zeros((4, 0)), name="`h`", n_obs=4, fix="Fix it.")
    with pytest.raises(ValueError, match="expected 5 rows"):
        check_matrix(dense, name="`h`", n_obs=5, fix="")
    with pytest.raises(ValueError, match="expected 4 rows"):
        check_matrix(dense.ravel(), name="`h`", n_obs=4, fix="")
    with pytest.raises(TypeError, match="must hold numbers"):
        check_matrix(dense.astype(str), name="`h`", n_obs=4, fix="")
    bad = dense.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"`h` contains NaN or infinite values\. Fix it\."):
        check_matrix(bad, name="`h`", n_obs=4, fix="Fix it.")


# ------------------------------------------------------------------ public functions leave adata unchanged
def _bad_inputs():
    """(name, make the bad AnnData, call, expected error) for the public functions of this issue."""

    def no_spatial():
        a = _adata()
        del a.obsm[Key.obsm.spatial]
        return a

    def nan_counts():
        a = _adata()
        a.X.data[0] = np.nan
        return a

    def empty_spot():
        a = _adata()
        X = a.X.tolil()
        X[0, :] = 0
        a.X = X.tocsr()
        return a

    def dup_genes():
        a = _adata()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a.var_names = ["g0"] * a.n_vars
        return a

    return [
        ("spatial: no coordinates", no_spatial, lambda a: semst.gr.spatial_graph(a), KeyError),
        (
            "spatial: knn k too large",
            _adata,
            lambda a: semst.gr.spatial_graph(a, mode="knn", n_neighbors=60),
            ValueError,
        ),
        ("spatial: bad mode", _adata, lambda a: semst.gr.spatial_graph(a, mode="grid"), ValueError),
        (
            "spatial: radius with knn",
            _adata,
            lambda a: semst.gr.spatial_graph(a, mode="knn", radius=3.0),
            ValueError,
        ),
        ("spatial: negative radius", _adata, lambda a: semst.gr.spatial_graph(a, radius=-1.0), ValueError),
        (
            "spatial: missing library",
            _adata,
            lambda a: semst.gr.spatial_graph(a, library_key="slice"),
            KeyError,
        ),
        ("feature: k too large", _adata, lambda a: semst.gr.feature_graph(a, n_neighbors=60), ValueError),
        ("feature: nan counts", nan_counts, lambda a: semst.gr.feature_graph(a), ValueError),
        ("feature: missing layer", _adata, lambda a: semst.gr.feature_graph(a, layer="mine"), KeyError),
        ("feature: missing rep", _adata, lambda a: semst.gr.feature_graph(a, use_rep="X_pca"), KeyError),
        ("preprocess: nan counts", nan_counts, lambda a: semst.pp.preprocess(a), ValueError),
        ("preprocess: empty spot", empty_spot, lambda a: semst.pp.preprocess(a), ValueError),
        ("preprocess: duplicated genes", dup_genes, lambda a: semst.pp.preprocess(a), ValueError),
        ("preprocess: bad n_top_genes", _adata, lambda a: semst.pp.preprocess(a, n_top_genes=0), ValueError),
        ("evaluate: missing column", _adata, lambda a: semst.tl.evaluate(a, "truth"), KeyError),
    ]


@pytest.mark.parametrize(("name", "make", "call", "error"), _bad_inputs(), ids=[b[0] for b in _bad_inputs()])
def test_failing_public_calls_leave_adata_unchanged(name, make, call, error):
    adata = make()
    before = adata.copy()
    with pytest.raises(error):
        call(adata)
    assert_equal(adata, before)


_KEYED_CALLS = {
    "gr.spatial_graph": lambda a, key: semst.gr.spatial_graph(a, key_added=key),
    "gr.feature_graph": lambda a, key: semst.gr.feature_graph(a, key_added=key),
    "pp.preprocess": lambda a, key: semst.pp.preprocess(a, key_added=key),
    "tl.semantic_embedding": lambda a, key: semst.tl.semantic_embedding(a, "minilm", key_added=key),
    "tl.evaluate": lambda a, key: semst.tl.evaluate(a, "truth", "pred", key_added=key),
    "tl.domains": lambda a, key: semst.tl.domains(a, n_domains=2, key_added=key),
    "tl.domains embedding_key": lambda a, key: semst.tl.domains(a, n_domains=2, embedding_key=key),
}


@pytest.mark.parametrize("key", ["", 3, None])
@pytest.mark.parametrize("fn", list(_KEYED_CALLS))
def test_keys_to_write_must_be_non_empty_strings(fn, key):
    adata = _adata()
    adata.obs["truth"] = adata.obs["pred"] = pd.Categorical(["a", "b"] * 30)
    before = adata.copy()
    name = "embedding_key" if fn.endswith("embedding_key") else "key_added"
    with pytest.raises(TypeError, match=rf"^{name} must be a non-empty string, got {key!r}\.$"):
        _KEYED_CALLS[fn](adata, key)
    assert_equal(adata, before)


def test_domains_on_fewer_spots_than_feature_neighbours_names_its_parameter():
    adata = _adata(n_obs=12)
    before = adata.copy()
    with pytest.raises(ValueError, match=r"only 12 spots.*\(n_feature_neighbors <= 11\)"):
        semst.tl.domains(adata, n_domains=2, n_epochs=1, progress=False)
    assert_equal(adata, before)


def test_view_refused_by_public_functions():
    adata = _adata()
    view = adata[:30]
    for call in (semst.gr.spatial_graph, semst.gr.feature_graph, semst.pp.preprocess):
        with pytest.raises(ValueError, match="copy"):
            call(view)
    with pytest.raises(TypeError, match="AnnData"):
        semst.gr.spatial_graph(adata.X)


def test_backed_anndata_refused_where_the_matrix_is_read(tmp_path):
    """An AnnData opened with backed='r' keeps X on disk: the functions that read X say how to load it, the
    ones that read only coordinates or the embedding still run, and the file on disk is left as it was."""
    path = tmp_path / "backed.h5ad"
    _adata().write_h5ad(path)
    before = path.read_bytes()
    backed = ad.read_h5ad(path, backed="r")
    calls = {
        "semst.tl.domains": lambda a: semst.tl.domains(a, n_domains=2, n_epochs=1, progress=False),
        "semst.pp.preprocess": semst.pp.preprocess,
        "semst.gr.feature_graph": semst.gr.feature_graph,
        "semst.tl.semantic_embedding": lambda a: semst.tl.semantic_embedding(a, model=str(tmp_path)),
    }
    for fn, call in calls.items():
        with pytest.raises(ValueError, match=rf"{fn} reads the expression matrix.*adata\.to_memory\(\)"):
            call(backed)
    assert not {"spatial_connectivities", "semst_feature_connectivities"} & set(backed.obsp)
    semst.gr.spatial_graph(backed, mode="knn", n_neighbors=4)
    assert Key.obsp.spatial_conn in backed.obsp
    backed.file.close()
    assert path.read_bytes() == before
