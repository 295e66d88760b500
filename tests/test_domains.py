from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import adjusted_rand_score

import semst_sc as semst
from semst_sc._constants import Key

EPOCHS = 15  # enough to exercise the whole pipeline; accuracy is measured in benchmarks/domains.py


@pytest.fixture(scope="module")
def demo():
    return semst.datasets.demo()


@pytest.fixture
def adata(demo):
    return demo.copy()


def _snapshot(a: ad.AnnData):
    return {
        "X": a.X.copy(),
        "obs": a.obs.copy(),
        "obsm": set(a.obsm),
        "obsp": set(a.obsp),
        "uns": set(a.uns),
        "layers": set(a.layers),
        "var": a.var.copy(),
    }


def _assert_unchanged(a: ad.AnnData, snap) -> None:
    assert (a.X != snap["X"]).nnz == 0
    pd.testing.assert_frame_equal(a.obs, snap["obs"])
    pd.testing.assert_frame_equal(a.var, snap["var"])
    assert set(a.obsm) == snap["obsm"]
    assert set(a.obsp) == snap["obsp"]
    assert set(a.uns) == snap["uns"]
    assert set(a.layers) == snap["layers"]


def test_domains_writes_contract_slots_and_keeps_user_data(adata, tmp_path):
    x_before = adata.X.copy()
    adata.uns["user_key"] = "mine"
    semst.tl.domains(adata, n_domains=7, n_epochs=EPOCHS, progress=False)
    assert (adata.X != x_before).nnz == 0
    assert adata.uns["user_key"] == "mine"
    emb = adata.obsm[Key.obsm.semst]
    assert emb.shape == (adata.n_obs, 128) and emb.dtype == np.float32 and np.isfinite(emb).all()
    dom = adata.obs[Key.obs.domain]
    assert isinstance(dom.dtype, pd.CategoricalDtype)
    assert list(dom.cat.categories) == [str(i) for i in range(1, 8)]
    assert dom.value_counts().iloc[0] == dom.value_counts().max()
    uns = adata.uns[Key.uns.semst]
    assert uns["params"]["n_domains"] == 7 and uns["params"]["device"] == "cpu"
    assert uns["params"]["semantics"] == "off" and uns["params"]["fusion"] == "none"
    assert set(uns["history"]) >= {"loss", "zinb", "cr", "spatial"}
    assert len(uns["history"]["loss"]) == EPOCHS
    assert {"torch", "semst-sc", "scanpy"} <= set(uns["versions"])
    # what besides the seed fixes the numbers on a CPU: the thread count and the processor
    env = uns["environment"]
    assert env["torch_num_threads"] == torch.get_num_threads() and env["deterministic_on_rerun"]
    assert isinstance(env["device_name"], str) and env["device_name"]
    for key in (Key.obsp.spatial_conn, Key.obsp.spatial_dist, Key.obsp.feature_conn):
        assert sp.issparse(adata.obsp[key])
    # everything survives the h5ad round trip
    adata.write_h5ad(tmp_path / "out.h5ad")
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    np.testing.assert_array_equal(back.obsm[Key.obsm.semst], emb)
    assert back.obs[Key.obs.domain].tolist() == dom.tolist()
    np.testing.assert_allclose(back.uns[Key.uns.semst]["history"]["loss"], uns["history"]["loss"])
    assert back.uns[Key.uns.semst]["params"]["fusion"] == "none"


def test_semantics_off_is_logged(adata):
    # scanpy logs through its own root logger (no propagation), so listen to it directly
    import logging

    import scanpy as sc

    records: list[str] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    sc.settings._root_logger.addHandler(handler)
    try:
        semst.tl.domains(adata, n_domains=5, n_epochs=2, progress=False)
    finally:
        sc.settings._root_logger.removeHandler(handler)
    assert any("semantics are OFF" in r for r in records)


def test_same_seed_same_labels_on_cpu(demo):
    a, b = demo.copy(), demo.copy()
    rng = np.random.default_rng(0)
    h = rng.normal(size=(demo.n_obs, 32)).astype(np.float32)
    a.obsm[Key.obsm.llm] = h
    b.obsm[Key.obsm.llm] = h.copy()
    semst.tl.domains(a, n_domains=7, n_epochs=EPOCHS, seed=3, progress=False)
    semst.tl.domains(b, n_domains=7, n_epochs=EPOCHS, seed=3, progress=False)
    assert a.uns[Key.uns.semst]["params"]["fusion"] == "fsm"
    np.testing.assert_array_equal(a.obsm[Key.obsm.semst], b.obsm[Key.obsm.semst])
    assert a.obs[Key.obs.domain].tolist() == b.obs[Key.obs.domain].tolist()


@pytest.mark.parametrize("fusion", ["fsm", "concat", "add", "cross_attention", "none"])
def test_every_fusion_runs_with_semantics(adata, fusion):
    adata.obsm[Key.obsm.llm] = np.random.default_rng(1).normal(size=(adata.n_obs, 24)).astype(np.float32)
    semst.tl.domains(adata, n_domains=4, n_epochs=3, fusion=fusion, progress=False)
    assert adata.uns[Key.uns.semst]["params"]["fusion"] == fusion
    assert adata.obs[Key.obs.domain].cat.categories.size == 4


@pytest.mark.parametrize("method", ["gmm", "kmeans", "leiden"])
def test_cluster_methods_give_exactly_n_domains(adata, method):
    semst.tl.domains(adata, n_domains=6, n_epochs=5, cluster_method=method, progress=False)
    assert adata.obs[Key.obs.domain].nunique() == 6


def test_copy_leaves_input_untouched(adata):
    snap = _snapshot(adata)
    out = semst.tl.domains(adata, n_domains=3, n_epochs=2, copy=True, progress=False)
    _assert_unchanged(adata, snap)
    assert Key.obs.domain in out.obs


def test_estimated_n_domains_stores_curve(adata):
    semst.tl.domains(
        adata, n_domains=None, n_epochs=5, k_range=(3, 6), cluster_method="kmeans", progress=False
    )
    sel = adata.uns[Key.uns.semst]["domain_selection"]
    assert list(sel["n_domains"]) == [3, 4, 5, 6]
    assert sel["chosen"] == adata.obs[Key.obs.domain].nunique()
    assert sel["chosen"] == sel["n_domains"][int(np.argmax(sel["score"]))]


def _scanpy_warnings(call) -> list[str]:
    """What ``call()`` logs at warning level through scanpy's own logger (which does not propagate)."""
    import logging

    import scanpy as sc

    records: list[str] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    sc.settings._root_logger.addHandler(handler)
    try:
        call()
    finally:
        sc.settings._root_logger.removeHandler(handler)
    return records


def test_existing_graphs_are_reused_not_overwritten(adata):
    semst.gr.spatial_graph(adata, mode="knn", n_neighbors=6)
    before = adata.obsp[Key.obsp.spatial_conn].copy()
    # the call asks for the default radius graph: the knn graph is reused, and the warning says so
    with pytest.warns(
        UserWarning, match=r"built with mode='knn', n_neighbors=6 .* asks for spatial_mode='radius'"
    ):
        semst.tl.domains(adata, n_domains=3, n_epochs=2, progress=False)
    assert (adata.obsp[Key.obsp.spatial_conn] != before).nnz == 0
    degree = before.nnz / before.shape[0]
    assert adata.uns[Key.uns.semst]["params"]["spatial_graph"] == f"reused (mean degree {degree:.1f})"
    # asking for the graph that is there: no warning of any kind
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        logged = _scanpy_warnings(
            lambda: semst.tl.domains(
                adata, n_domains=3, n_epochs=2, spatial_mode="knn", n_spatial_neighbors=6, progress=False
            )
        )
    assert not any("spatial graph" in r for r in logged)
    # another k: reused all the same, said so, with both ways out
    with pytest.warns(
        UserWarning, match=r"asks for spatial_mode='knn', n_spatial_neighbors=8.*del adata\.obsp"
    ):
        semst.tl.domains(
            adata, n_domains=3, n_epochs=2, spatial_mode="knn", n_spatial_neighbors=8, progress=False
        )
    assert (adata.obsp[Key.obsp.spatial_conn] != before).nnz == 0
    # a graph of unknown settings and arguments for a new one: the arguments are said to be ignored
    del adata.uns[Key.uns.spatial_graph]
    with pytest.warns(UserWarning, match=r"spatial_mode='knn', n_spatial_neighbors=8 ignored"):
        semst.tl.domains(
            adata, n_domains=3, n_epochs=2, spatial_mode="knn", n_spatial_neighbors=8, progress=False
        )


def test_a_feature_graph_built_for_other_settings_is_said_to_be_reused(adata):
    semst.tl.domains(adata, n_domains=3, n_epochs=2, progress=False)
    rec = adata.uns[Key.uns.feature_graph]["params"]
    assert (rec["built_by"], rec["n_neighbors"], rec["n_genes"]) == ("semst.tl.domains", 14, 2000)
    graph = adata.obsp[Key.obsp.feature_conn].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the same settings again: silent
        semst.tl.domains(adata, n_domains=3, n_epochs=2, progress=False)
    with pytest.warns(
        UserWarning, match=r"for other settings than this call's \(genes 2000 -> 500\).*del adata"
    ):
        semst.tl.domains(adata, n_domains=3, n_epochs=2, n_top_genes=500, progress=False)
    assert (adata.obsp[Key.obsp.feature_conn] != graph).nnz == 0  # reused, never overwritten
    with pytest.warns(UserWarning, match=r"n_feature_neighbors 14 -> 6"):
        semst.tl.domains(adata, n_domains=3, n_epochs=2, n_feature_neighbors=6, progress=False)
    # the way out: delete it, and the call builds (and records) its own
    del adata.obsp[Key.obsp.feature_conn]
    semst.tl.domains(adata, n_domains=3, n_epochs=2, n_top_genes=500, progress=False)
    assert adata.uns[Key.uns.feature_graph]["params"]["n_genes"] == 500
    # a graph from semst.gr.feature_graph with another k
    del adata.obsp[Key.obsp.feature_conn]
    semst.gr.feature_graph(adata, n_neighbors=5)
    with pytest.warns(UserWarning, match=r"built by semst\.gr\.feature_graph .*n_feature_neighbors 5 -> 14"):
        semst.tl.domains(adata, n_domains=3, n_epochs=2, progress=False)


def test_a_graph_semst_did_not_build_is_named_when_reused(adata):
    import squidpy as sq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # squidpy 1.8 deprecates the generic entry point
        sq.gr.spatial_neighbors(adata, coord_type="grid", n_neighs=6)
    logged = _scanpy_warnings(lambda: semst.tl.domains(adata, n_domains=3, n_epochs=2, progress=False))
    hits = [r for r in logged if "semst-sc did not build" in r]
    assert len(hits) == 1, logged
    assert "coord_type=grid" in hits[0] and "n_neighbors=6" in hits[0] and "del adata.obsp" in hits[0]
    # the way out works: the method's own radius graph is built (far denser on Visium)
    del adata.obsp[Key.obsp.spatial_conn]
    logged = _scanpy_warnings(lambda: semst.tl.domains(adata, n_domains=3, n_epochs=2, progress=False))
    assert not any("did not build" in r for r in logged)
    assert adata.uns[Key.uns.semst]["params"]["spatial_graph"] == "built (radius)"
    assert adata.obsp[Key.obsp.spatial_conn].nnz / adata.n_obs > 20


def _two_slices(demo: ad.AnnData) -> ad.AnnData:
    """Two copies of the demo crop with the same coordinates, as after concatenating two sections."""
    a, b = demo.copy(), demo.copy()
    a.obs_names = [f"a-{n}" for n in a.obs_names]
    b.obs_names = [f"b-{n}" for n in b.obs_names]
    both = ad.concat([a, b], label="slice", keys=["A", "B"])
    both.uns["spatial"] = {"A": {}, "B": {}}
    return both


def test_library_key_keeps_slices_apart(demo):
    both = _two_slices(demo)
    slice_of = both.obs["slice"].to_numpy()
    semst.tl.domains(both, n_domains=3, n_epochs=2, library_key="slice", progress=False)
    conn = sp.coo_matrix(both.obsp[Key.obsp.spatial_conn])
    assert conn.nnz > 0 and (slice_of[conn.row] == slice_of[conn.col]).all()
    # each slice gets the graph it would get alone
    alone = demo.copy()
    semst.gr.spatial_graph(alone)
    n = demo.n_obs
    a_block = sp.csr_matrix(both.obsp[Key.obsp.spatial_conn])[:n, :n]
    assert (a_block != sp.csr_matrix(alone.obsp[Key.obsp.spatial_conn])).nnz == 0
    assert both.uns[Key.uns.semst]["params"]["library_key"] == "slice"
    assert both.obs[Key.obs.domain].notna().all()


def test_library_key_survives_save_and_load(demo, tmp_path):
    model = semst.tl.SemST(_two_slices(demo), library_key="slice")
    model.train(2, progress=False)
    model.save(tmp_path / "m.pt")
    fresh = _two_slices(demo)  # no graph yet: load must build it slice by slice again
    back = semst.tl.SemST.load(tmp_path / "m.pt", fresh)
    assert back.params["library_key"] == "slice"
    conn = sp.coo_matrix(back.data.adj_spa)
    slice_of = fresh.obs["slice"].to_numpy()
    assert (slice_of[conn.row] == slice_of[conn.col]).all()
    np.testing.assert_array_equal(back.get_embedding(), model.get_embedding())


def test_several_libraries_without_library_key_warn(demo):
    both = _two_slices(demo)
    # the same coordinates twice: no radius can be derived, and the error says how to fix it
    with pytest.warns(UserWarning, match="2 libraries"), pytest.raises(ValueError, match="pass library_key="):
        semst.tl.domains(both, n_domains=3, n_epochs=2, progress=False)
    pitch = semst.gr._spatial.median_nn_distance(demo.obsm["spatial"], np.zeros(demo.n_obs, dtype=np.int64))
    both.obsm["spatial"][demo.n_obs :] += pitch / 3  # overlapping, but distinct, coordinates
    with pytest.warns(UserWarning, match=r"describes 2 libraries \('A', 'B'\).*pass library_key=") as rec:
        semst.tl.domains(both, n_domains=3, n_epochs=2, progress=False)
    assert {w.filename for w in rec} == {__file__}  # the warning points at the caller, not at the package
    del both.obsp[Key.obsp.spatial_conn]
    with pytest.warns(UserWarning, match="describes 2 libraries") as rec:
        semst.tl.SemST(both)  # one call less deep than through tl.domains: same answer
    assert {w.filename for w in rec} == {__file__}
    slice_of = both.obs["slice"].to_numpy()
    conn = sp.coo_matrix(both.obsp[Key.obsp.spatial_conn])
    assert (slice_of[conn.row] != slice_of[conn.col]).any()  # what the warning is about
    # a reused graph that joins the slices is used as it is, with a warning that says how to rebuild it
    with pytest.warns(UserWarning, match=r"joins spots of different slices.*library_key='slice'"):
        semst.tl.domains(both, n_domains=3, n_epochs=2, library_key="slice", progress=False)
    assert both.uns[Key.uns.semst]["params"]["spatial_graph"].startswith("reused")


def test_preprocessed_layer_path(adata):
    semst.pp.preprocess(adata)
    semst.tl.domains(
        adata,
        n_domains=3,
        n_epochs=3,
        layer=Key.layers.scaled,
        preprocess=False,
        use_hvg=Key.var.hvg,
        progress=False,
    )
    assert adata.uns[Key.uns.semst]["params"]["input"] == "preprocessed"
    assert adata.uns[Key.uns.semst]["params"]["n_genes"] == int(adata.var[Key.var.hvg].sum())


def test_counts_decoder_runs(adata):
    semst.tl.domains(adata, n_domains=3, n_epochs=3, decoder="counts", progress=False)
    assert np.isfinite(adata.uns[Key.uns.semst]["history"]["loss"]).all()


def test_smoothing_is_a_majority_vote_over_the_spatial_graph(adata):
    from semst_sc.tl._cluster import cluster_embedding, smooth_labels

    raw = semst.tl.domains(adata, n_domains=5, n_epochs=3, smooth=False, progress=False, copy=True)
    assert not raw.uns[Key.uns.semst]["params"]["smooth"]
    semst.tl.domains(adata, n_domains=5, n_epochs=3, progress=False)  # smoothing is the default
    assert adata.uns[Key.uns.semst]["params"]["smooth"]
    np.testing.assert_array_equal(adata.obsm[Key.obsm.semst], raw.obsm[Key.obsm.semst])
    labels, _ = cluster_embedding(raw.obsm[Key.obsm.semst], 5, seed=0)
    expected = smooth_labels(labels, adata.obsp[Key.obsp.spatial_conn])
    got = adata.obs[Key.obs.domain].cat.codes.to_numpy()
    # same partition (the categories are renumbered largest first)
    assert adjusted_rand_score(expected, got) == 1.0
    assert adjusted_rand_score(labels, got) < 1.0


def test_smooth_hops_clusters_the_averaged_embedding_and_keeps_the_learned_one(adata):
    from semst_sc.tl._cluster import cluster_embedding, smooth_embedding, smooth_labels

    raw = semst.tl.domains(adata, n_domains=5, n_epochs=3, progress=False, copy=True)
    assert raw.uns[Key.uns.semst]["params"]["smooth_hops"] == 0  # opt-in
    semst.tl.domains(adata, n_domains=5, n_epochs=3, smooth_hops=2, progress=False)
    assert adata.uns[Key.uns.semst]["params"]["smooth_hops"] == 2
    # training is untouched and obsm keeps the learned embedding, not the averaged one
    np.testing.assert_array_equal(adata.obsm[Key.obsm.semst], raw.obsm[Key.obsm.semst])
    adj = adata.obsp[Key.obsp.spatial_conn]
    labels, _ = cluster_embedding(smooth_embedding(raw.obsm[Key.obsm.semst], adj, 2), 5, seed=0)
    got = adata.obs[Key.obs.domain].cat.codes.to_numpy()
    assert adjusted_rand_score(smooth_labels(labels, adj), got) == 1.0
    assert adjusted_rand_score(raw.obs[Key.obs.domain].cat.codes.to_numpy(), got) < 1.0
    # the estimated number of domains is read from the same averaged embedding
    est = semst.tl.domains(adata, n_epochs=3, smooth_hops=2, k_range=(2, 4), progress=False, copy=True)
    sel = est.uns[Key.uns.semst]["domain_selection"]
    want = semst.tl.estimate_n_domains(
        smooth_embedding(est.obsm[Key.obsm.semst], adj, 2), k_range=(2, 4), seed=0
    )
    np.testing.assert_allclose(sel["score"], want.score)


def test_cluster_metric_cosine_clusters_unit_rows_and_keeps_the_learned_embedding(adata):
    from semst_sc.tl._cluster import cluster_embedding, smooth_labels

    euc = semst.tl.domains(
        adata, n_domains=5, n_epochs=3, cluster_metric="euclidean", progress=False, copy=True
    )
    assert euc.uns[Key.uns.semst]["params"]["cluster_metric"] == "euclidean"
    semst.tl.domains(adata, n_domains=5, n_epochs=3, progress=False)
    assert adata.uns[Key.uns.semst]["params"]["cluster_metric"] == "cosine"  # the default
    np.testing.assert_array_equal(adata.obsm[Key.obsm.semst], euc.obsm[Key.obsm.semst])
    emb, adj = euc.obsm[Key.obsm.semst], adata.obsp[Key.obsp.spatial_conn]
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for res, x in ((adata, unit), (euc, emb)):  # cosine: the unit rows clustered as they are
        labels, _ = cluster_embedding(x, 5, metric="euclidean", seed=0)
        got = res.obs[Key.obs.domain].cat.codes.to_numpy()
        assert adjusted_rand_score(smooth_labels(labels, adj), got) == 1.0
    assert adjusted_rand_score(euc.obs[Key.obs.domain].cat.codes, adata.obs[Key.obs.domain].cat.codes) < 1.0
    # the estimated number of domains is chosen in the same geometry
    est = semst.tl.domains(adata, n_epochs=3, k_range=(2, 4), progress=False, copy=True)
    want = semst.tl.estimate_n_domains(unit, k_range=(2, 4), metric="euclidean", seed=0)
    np.testing.assert_allclose(est.uns[Key.uns.semst]["domain_selection"]["score"], want.score)


def test_log_input_and_spatial_weighting_are_recorded_and_change_training(adata):
    a = semst.tl.domains(adata, n_domains=3, n_epochs=2, progress=False, copy=True)
    b = semst.tl.domains(adata, n_domains=3, n_epochs=2, log_input=False, progress=False, copy=True)
    c = semst.tl.domains(
        adata, n_domains=3, n_epochs=2, spatial_weighting="balanced", progress=False, copy=True
    )
    pa, pb, pc = (x.uns[Key.uns.semst]["params"] for x in (a, b, c))
    assert pa["log_input"] and not pb["log_input"] and pa["input_transform"] == "log1p"
    assert pa["spatial_weighting"] == "reference" and pc["spatial_weighting"] == "balanced"
    assert not np.allclose(a.obsm[Key.obsm.semst], b.obsm[Key.obsm.semst])
    assert not np.allclose(
        a.uns[Key.uns.semst]["history"]["spatial"], c.uns[Key.uns.semst]["history"]["spatial"]
    )


def test_zinb_fraction_is_recorded_and_changes_training(adata):
    a = semst.tl.domains(adata, n_domains=3, n_epochs=3, zinb_fraction=1, progress=False, copy=True)
    b = semst.tl.domains(adata, n_domains=3, n_epochs=3, progress=False, copy=True)
    pa, pb = (x.uns[Key.uns.semst]["params"] for x in (a, b))
    assert pa["zinb_fraction"] == 1.0 and pb["zinb_fraction"] == 0.5  # 0.5: the default
    assert not np.allclose(a.uns[Key.uns.semst]["history"]["zinb"], b.uns[Key.uns.semst]["history"]["zinb"])
    assert b.obs[Key.obs.domain].nunique() == 3


def test_ema_decay_is_recorded_and_changes_the_embedding(adata):
    a = semst.tl.domains(adata, n_domains=3, n_epochs=4, ema_decay=0, progress=False, copy=True)
    b = semst.tl.domains(adata, n_domains=3, n_epochs=4, ema_decay=0.5, progress=False, copy=True)
    pa, pb = (x.uns[Key.uns.semst]["params"] for x in (a, b))
    assert pa["ema_decay"] == 0.0 and pb["ema_decay"] == 0.5
    # the same training (losses of the trained weights), a different final module
    np.testing.assert_array_equal(
        a.uns[Key.uns.semst]["history"]["loss"], b.uns[Key.uns.semst]["history"]["loss"]
    )
    assert not np.allclose(a.obsm[Key.obsm.semst], b.obsm[Key.obsm.semst])


@pytest.mark.parametrize(
    ("mutate", "kwargs", "exc", "match"),
    [
        (None, {"n_domains": 1}, ValueError, "between 2 and the number of spots"),
        (None, {"n_domains": 10**7}, ValueError, "between 2 and the number of spots"),
        (None, {"n_domains": 2.5}, TypeError, "integer"),
        (
            None,
            {"n_domains": 3, "fusion": "film"},
            ValueError,
            "'fsm'.*'concat'.*'add'.*'cross_attention'.*'none'",
        ),
        (None, {"n_domains": 3, "cluster_method": "mclust"}, ValueError, "'gmm'.*'kmeans'.*'leiden'"),
        (None, {"n_domains": 3, "cluster_metric": "l2"}, ValueError, "cluster_metric='l2'.*'cosine'"),
        (None, {"n_domains": 3, "spatial_weighting": "equal"}, ValueError, "'reference'.*'balanced'"),
        (None, {"n_domains": 3, "device": "cuda"}, (RuntimeError, ValueError), "CUDA"),
        (None, {"n_domains": 3, "precision": "half"}, ValueError, "'float32'.*'bfloat16'"),
        (None, {"n_domains": 3, "zinb_fraction": 0}, ValueError, r"zinb_fraction.*\(0, 1\]"),
        (None, {"n_domains": 3, "zinb_fraction": 1.5}, ValueError, r"zinb_fraction.*\(0, 1\]"),
        (None, {"n_domains": 3, "zinb_fraction": "half"}, TypeError, "zinb_fraction"),
        (None, {"n_domains": 3, "ema_decay": 1.0}, ValueError, r"ema_decay.*\[0, 1\)"),
        (None, {"n_domains": 3, "ema_decay": None}, TypeError, "ema_decay"),
        (None, {"n_domains": 3, "smooth_hops": -1}, ValueError, "smooth_hops must be a non-negative integer"),
        (
            None,
            {"n_domains": 3, "smooth_hops": 1.5},
            ValueError,
            "smooth_hops must be a non-negative integer",
        ),
        (
            None,
            {"n_domains": 3, "smooth_hops": True},
            ValueError,
            "smooth_hops must be a non-negative integer",
        ),
        (None, {"n_domains": 3, "library_key": "slice"}, KeyError, "library_key='slice' is not a column"),
        (None, {"n_domains": 3, "library_key": "slice", "model": "minilm"}, KeyError, "library_key='slice'"),
        ("slice_nan", {"n_domains": 3, "library_key": "slice"}, ValueError, "missing value"),
        ("llm_nan", {"n_domains": 3}, ValueError, "NaN"),
        ("float_counts", {"n_domains": 3}, ValueError, "integer"),
        ("no_spatial", {"n_domains": 3}, KeyError, "spatial"),
        ("negative_preprocessed", {"n_domains": 3, "preprocess": False}, ValueError, "negative"),
        (None, {"n_domains": 3, "seed": None}, TypeError, r"seed must be an integer in \[0, 2\*\*32\)"),
        (
            None,
            {"n_domains": 3, "seed": 1.5},
            TypeError,
            "seed must be an integer",
        ),  # was refused after training
        (None, {"n_domains": 3, "seed": -1}, ValueError, "seed must be in"),
        # an annotation column, the coordinates and the semantics are never written over
        (
            None,
            {"n_domains": 3, "key_added": "layer_guess_reordered"},
            ValueError,
            r"would overwrite adata\.obs\['layer_guess_reordered'\], which semst-sc did not write.*key_added=",
        ),
        (None, {"n_domains": 3, "embedding_key": "spatial"}, ValueError, "the key of an input"),
        (None, {"n_domains": 3, "embedding_key": "X_llm"}, ValueError, "the key of an input"),
        (
            "user_obsm",
            {"n_domains": 3, "embedding_key": "X_pca"},
            ValueError,
            r"obsm\['X_pca'\].*embedding_key=",
        ),
        (None, {"n_domains": 3, "key_added": ""}, TypeError, "key_added must be a non-empty string"),
    ],
)
def test_bad_input_raises_and_leaves_adata_unchanged(adata, mutate, kwargs, exc, match):
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    if mutate == "llm_nan":
        h = np.ones((adata.n_obs, 4), np.float32)
        h[3, 1] = np.nan
        adata.obsm[Key.obsm.llm] = h
    elif mutate == "slice_nan":
        adata.obs["slice"] = pd.Categorical(["a"] * (adata.n_obs - 1) + [None], categories=["a"])
    elif mutate == "float_counts":
        adata.X = adata.X.astype(np.float32) * 0.5
    elif mutate == "no_spatial":
        del adata.obsm[Key.obsm.spatial]
    elif mutate == "user_obsm":
        adata.obsm["X_pca"] = np.zeros((adata.n_obs, 3))
    elif mutate == "negative_preprocessed":
        adata.X = adata.X.copy()
        adata.X.data[0] = -1.0
    kwargs = {"n_epochs": 2, "progress": False, **kwargs}
    snap = _snapshot(adata)
    with pytest.raises(exc, match=match):
        semst.tl.domains(adata, **kwargs)
    _assert_unchanged(adata, snap)


def test_own_keys_are_rewritten_after_reloading_and_recluster(adata, tmp_path):
    """A run's own columns may be written again, by a later run or by recluster, also after save and load
    (the keys it wrote are kept in uns['semst']['written_keys']); the annotation stays refused."""
    kw = {"n_epochs": 2, "progress": False}
    semst.tl.domains(adata, 3, key_added="dom_a", embedding_key="emb_a", **kw)
    semst.tl.recluster(adata, 4, key_added="dom_a4")
    with pytest.warns(UserWarning, match=r"this run's record replaces it.*uns_key='semst_domain_run'"):
        semst.tl.domains(adata, 3, **kw)  # the defaults: the record now names semst_domain / X_semst
    adata.write_h5ad(tmp_path / "run.h5ad")
    back = ad.read_h5ad(tmp_path / "run.h5ad")
    written = set(back.uns[Key.uns.semst]["written_keys"]["obs"])
    assert {"dom_a", "dom_a4", Key.obs.domain} <= written
    with pytest.warns(UserWarning, match="this run's record replaces it"):
        semst.tl.domains(back, 2, key_added="dom_a", embedding_key="emb_a", **kw)
    semst.tl.recluster(back, 2, key_added="dom_a4")
    assert back.obs["dom_a"].cat.categories.size == 2 and back.obs["dom_a4"].cat.categories.size == 2
    truth = back.obs["layer_guess_reordered"].copy()
    with pytest.raises(ValueError, match=r"semst\.tl\.recluster would overwrite adata\.obs\['layer_guess"):
        semst.tl.recluster(back, 3, key_added="layer_guess_reordered")
    pd.testing.assert_series_equal(back.obs["layer_guess_reordered"], truth)


def test_runs_kept_under_their_own_uns_key(adata, tmp_path):
    """Two runs in one object keep both records (uns_key); recluster and pl.loss read the one named, the
    keys of either run stay semst-sc's to rewrite after save and load, and a shared record says it is
    being replaced."""
    import matplotlib

    matplotlib.use("Agg")
    kw = {"n_epochs": 2, "progress": False}
    semst.tl.domains(adata, 3, **kw)
    semst.tl.domains(
        adata, 4, key_added="dom_b", embedding_key="emb_b", uns_key="semst_b", fusion="none", **kw
    )
    first, second = adata.uns[Key.uns.semst], adata.uns["semst_b"]
    assert first["domain_key"] == Key.obs.domain and first["params"]["n_domains"] == 3
    assert second["domain_key"] == "dom_b" and second["params"]["n_domains"] == 4
    assert first["function"] == second["function"] == "semst.tl.domains"
    # recluster the second run: its embedding, its column, its record; the first run is left as it was
    labels_a = adata.obs[Key.obs.domain].copy()
    semst.tl.recluster(adata, 2, uns_key="semst_b")
    assert adata.obs["dom_b"].cat.categories.size == 2 and adata.uns["semst_b"]["params"]["n_domains"] == 2
    pd.testing.assert_series_equal(adata.obs[Key.obs.domain], labels_a)
    assert adata.uns[Key.uns.semst]["params"]["n_domains"] == 3
    semst.pl.loss(adata, "semst_b", show=False)
    # after save and load, the second run's keys are recognised from its own record
    adata.write_h5ad(tmp_path / "two.h5ad")
    back = ad.read_h5ad(tmp_path / "two.h5ad")
    semst.tl.domains(back, 2, key_added="dom_b", embedding_key="emb_b", uns_key="semst_b", **kw)
    # a run writing another column into an existing record replaces it, and says so
    with pytest.warns(
        UserWarning, match=r"uns\['semst_b'\] holds the record of the run that wrote obs\['dom_b'\]"
    ):
        semst.tl.domains(back, 2, uns_key="semst_b", **kw)
    assert back.uns["semst_b"]["domain_key"] == Key.obs.domain
    # a missing record names the ones there are; another function's record is never taken for a run
    with pytest.raises(KeyError, match=r"uns\['nope'\] is missing.*uns_key='semst', 'semst_b'"):
        semst.tl.recluster(back, 2, uns_key="nope")
    graph_record = dict(back.uns[Key.uns.spatial_graph])
    assert "params" in graph_record
    labels = back.obs[Key.obs.domain].copy()
    with pytest.raises(KeyError, match=r"uns\['spatial_neighbors'\] is missing or is not the record"):
        semst.tl.recluster(back, 2, uns_key=Key.uns.spatial_graph)
    assert back.uns[Key.uns.spatial_graph].keys() == graph_record.keys()
    pd.testing.assert_series_equal(back.obs[Key.obs.domain], labels)


@pytest.mark.parametrize(
    ("uns_key", "exc", "match"),
    [
        ("user_notes", ValueError, r"would overwrite adata\.uns\['user_notes'\], which is not the record"),
        (Key.uns.llm, ValueError, "names a slot that another function writes"),
        (Key.uns.spatial_graph, ValueError, "names a slot that another function writes"),
        ("semst_domain_colors", ValueError, "names a slot that another function writes"),
        ("", TypeError, "uns_key must be a non-empty string"),
        (None, TypeError, "uns_key must be a non-empty string"),
    ],
)
def test_bad_uns_key_is_refused_before_any_work(adata, uns_key, exc, match):
    adata.uns["user_notes"] = {"note": "mine"}
    snap = _snapshot(adata)
    with pytest.raises(exc, match=match):
        semst.tl.domains(adata, 3, n_epochs=2, progress=False, uns_key=uns_key)
    _assert_unchanged(adata, snap)
    assert adata.uns["user_notes"] == {"note": "mine"}


def test_view_is_rejected(demo):
    view = demo[:100]
    with pytest.raises(ValueError, match="view"):
        semst.tl.domains(view, n_domains=3, n_epochs=2, progress=False)


def test_class_api_save_load_roundtrip(adata, tmp_path):
    model = semst.tl.SemST(adata, seed=0)
    model.train(5, progress=False)
    emb = model.get_embedding()
    path = tmp_path / "semst.pt"
    model.save(path)
    again = semst.tl.SemST.load(path, adata)
    np.testing.assert_allclose(again.get_embedding(), emb, rtol=1e-5, atol=1e-6)
    assert again.history["loss"].shape == (5,)
    assert again.environment == model.environment and model.environment["torch_num_threads"] >= 1
    with pytest.raises(RuntimeError, match="train"):
        semst.tl.SemST(adata).get_embedding()


def test_class_api_load_runs_no_code_from_the_file(adata, tmp_path):
    """SemST.save writes tensors and plain values only, read back with weights_only=True; a file with other
    Python objects (a model saved before this change, or anything else) is read only when trusted."""
    model = semst.tl.SemST(adata, seed=0)
    model.train(2, progress=False)
    path = tmp_path / "semst.pt"
    model.save(path)
    torch.load(path, weights_only=True)  # the format itself: no pickled numpy arrays
    state = torch.load(path, weights_only=True)
    state["history"] = {k: np.asarray(v) for k, v in state["history"].items()}  # the former format
    old = tmp_path / "old.pt"
    torch.save(state, old)
    with pytest.raises(ValueError, match="trusted=True"):
        semst.tl.SemST.load(old, adata)
    again = semst.tl.SemST.load(old, adata, trusted=True)
    np.testing.assert_allclose(again.get_embedding(), model.get_embedding(), rtol=1e-5, atol=1e-6)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"not a model written by semst\.tl\.SemST\.save"):
        semst.tl.SemST.load(tmp_path / "other.pt", adata)
    with pytest.raises(FileNotFoundError, match="no model file"):
        semst.tl.SemST.load(tmp_path / "missing.pt", adata)


def test_bfloat16_precision_trains_is_recorded_and_reloads(adata, tmp_path, monkeypatch):
    model = semst.tl.SemST(adata, seed=0, precision="bfloat16")
    assert model.module.precision == "bfloat16" and model.params["precision"] == "bfloat16"
    model.train(3, progress=False)
    assert np.isfinite(model.history["loss"]).all()
    emb = model.get_embedding()
    assert emb.dtype == np.float32 and np.isfinite(emb).all()
    model.save(tmp_path / "m.pt")
    again = semst.tl.SemST.load(tmp_path / "m.pt", adata)
    assert again.module.precision == "bfloat16"
    np.testing.assert_allclose(again.get_embedding(), emb, rtol=1e-5, atol=1e-6)
    # a CPU without native bfloat16 gets told that float32 is faster there
    import semst_sc.tl._semst as semst_module

    monkeypatch.setattr(semst_module, "_cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="native bfloat16"):
        semst.tl.SemST(adata, precision="bfloat16", device="cpu")
