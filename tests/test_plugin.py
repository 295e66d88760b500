"""FSM plug-and-play: the STAGATE-style graph-attention autoencoder and ``tl._plugin.gat_domains``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import semst_sc as semst
from semst_sc._validation import get_counts
from semst_sc.nn import AttentionGraph, GATAutoencoder, edge_aggregate, edge_softmax
from semst_sc.nn._fusion import FSM as FSM_DEFINED
from semst_sc.nn._gat import _edge_dots, _edge_dots_chunked
from semst_sc.tl._plugin import gat_domains, stagate_matrix

torch.set_num_threads(1)

#: small settings that keep each call to gat_domains at a couple of seconds on one CPU thread
FAST = {"n_epochs": 4, "n_top_genes": 400, "hidden": 64}


@pytest.fixture(scope="module")
def demo():
    return semst.datasets.demo()


@pytest.fixture(scope="module")
def demo_inputs(demo):
    """The demo's STAGATE input (400 genes) and its spatial graph with self-loops."""
    x, _ = stagate_matrix(get_counts(demo), demo.var_names, 400)
    tmp = demo.copy()
    semst.gr.spatial_graph(tmp)
    graph = AttentionGraph.from_adjacency(tmp.obsp["spatial_connectivities"])
    return torch.from_numpy(x.toarray()), graph


def _tiny_graph(n: int = 9, seed: int = 3) -> AttentionGraph:
    adj = sp.random(n - 1, n - 1, density=0.35, random_state=seed, format="csr")
    # the last spot has no neighbour: only its self-loop is left
    adj = sp.block_diag([adj + adj.T, sp.csr_matrix((1, 1))], format="csr")
    return AttentionGraph.from_adjacency(adj)


# -- edge operations ------------------------------------------------------------------------------------
def test_edge_softmax_matches_dense_reference():
    g = _tiny_graph()
    n = g.n_nodes
    logits = torch.randn(g.n_edges, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 5
    w = edge_softmax(logits, g.dst, n)
    dense = torch.full((n, n), -torch.inf, dtype=torch.float64)
    dense[g.dst, g.src] = logits
    ref = torch.softmax(dense, dim=1)  # dense N x N only on this 9-node graph, as the reference
    torch.testing.assert_close(w, ref[g.dst, g.src])
    sums = torch.zeros(n, dtype=torch.float64).index_add(0, g.dst, w)
    torch.testing.assert_close(sums, torch.ones(n, dtype=torch.float64))
    # the isolated spot attends only to itself
    assert w[g.dst == n - 1].tolist() == [1.0]


def test_edge_softmax_is_stable_for_large_scores():
    g = _tiny_graph()
    w = edge_softmax(torch.full((g.n_edges,), 1e4, dtype=torch.float32), g.dst, g.n_nodes)
    assert torch.isfinite(w).all()
    deg = torch.bincount(g.dst, minlength=g.n_nodes).float()
    torch.testing.assert_close(w, 1.0 / deg[g.dst])


def test_edge_aggregate_matches_dense_and_gradcheck():
    g = _tiny_graph()
    gen = torch.Generator().manual_seed(1)
    w = torch.rand(g.n_edges, dtype=torch.float64, generator=gen, requires_grad=True)
    h = torch.randn(g.n_nodes, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    dense = torch.zeros(g.n_nodes, g.n_nodes, dtype=torch.float64)
    dense[g.dst, g.src] = w.detach()
    torch.testing.assert_close(edge_aggregate(w, h, g), dense @ h)
    assert torch.autograd.gradcheck(lambda w_, h_: edge_aggregate(w_, h_, g), (w, h))
    assert torch.autograd.gradcheck(lambda w_: edge_softmax(w_, g.dst, g.n_nodes), (w,))


def test_edge_dots_kernel_and_fallback_agree():
    g = _tiny_graph()
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(g.n_nodes, 5, generator=gen), torch.randn(g.n_nodes, 5, generator=gen)
    ref = (a @ b.T)[g.dst, g.src]
    torch.testing.assert_close(_edge_dots(a, b, g), ref)
    torch.testing.assert_close(_edge_dots_chunked(a, b, g), ref)


def test_attention_graph_checks():
    with pytest.raises(TypeError, match=r"scipy\.sparse"):
        AttentionGraph.from_adjacency(np.eye(3))
    with pytest.raises(ValueError, match="lie in"):
        AttentionGraph.from_edges(torch.tensor([0, 5]), torch.tensor([1, 0]), 3)
    g = AttentionGraph.from_edges(torch.tensor([2, 0, 1]), torch.tensor([0, 1, 2]), 3)
    assert g.dst.tolist() == [0, 1, 2] and g.src.tolist() == [1, 2, 0]  # CSR order


# -- the model ------------------------------------------------------------------------------------------
def test_model_uses_the_package_fsm_unchanged(demo_inputs):
    x, g = demo_inputs
    plain = GATAutoencoder(x.shape[1], hidden=32, latent=8)
    assert plain.fsm is None
    torch.manual_seed(0)
    model = GATAutoencoder(x.shape[1], llm_dim=16, hidden=32, latent=8)
    assert type(model.fsm) is semst.nn.FSM and semst.nn.FSM is FSM_DEFINED
    assert (model.fsm.feature_dim, model.fsm.cond_dim) == (8, 16)
    seen = {}
    model.fsm.register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0], out=out))
    h = torch.randn(x.shape[0], 16)
    out = model(x, g, h)
    # the returned embedding is the FSM's output, which differs from its input (the raw latent)
    assert out.z is seen["out"]
    assert not torch.equal(seen["inp"], seen["out"])
    assert out.recon.shape == x.shape and out.attention.shape == (g.n_edges,)
    with pytest.raises(ValueError, match="has an FSM"):
        model(x, g)
    with pytest.raises(ValueError, match="no FSM"):
        plain(x, g, h)


def test_model_trains(demo_inputs):
    x, g = demo_inputs
    torch.manual_seed(0)
    model = GATAutoencoder(x.shape[1], llm_dim=12, hidden=64)
    h = torch.randn(x.shape[0], 12, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    losses = []
    for epoch in range(30):
        opt.zero_grad()
        loss = model.loss(x, model(x, g, h).recon)
        loss.backward()
        if epoch == 0:  # gradients reach every parameter, the FSM's and the attention vectors included
            for name, p in model.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert np.all(np.isfinite(losses))


# -- gat_domains ----------------------------------------------------------------------------------------
def _snapshot(adata):
    return {
        "X": adata.X.copy(),
        "obsm": {k: np.array(v, copy=True) for k, v in adata.obsm.items()},
        "obsp": sorted(adata.obsp.keys()),
        "uns": sorted(adata.uns.keys()),
        "obs": list(adata.obs.columns),
        "var": list(adata.var.columns),
        "shape": adata.shape,
    }


def _assert_unchanged(adata, snap):
    assert adata.shape == snap["shape"]
    assert (adata.X != snap["X"]).nnz == 0
    assert sorted(adata.obsm.keys()) == sorted(snap["obsm"])
    for k, v in snap["obsm"].items():
        np.testing.assert_array_equal(np.asarray(adata.obsm[k]), v)
    assert sorted(adata.obsp.keys()) == snap["obsp"]
    assert sorted(adata.uns.keys()) == snap["uns"]
    assert list(adata.obs.columns) == snap["obs"] and list(adata.var.columns) == snap["var"]


def test_gat_domains_reproducible_and_leaves_adata_alone(demo):
    adata = demo.copy()
    h = np.random.default_rng(0).standard_normal((adata.n_obs, 24)).astype(np.float32)
    snap = _snapshot(adata)
    a = gat_domains(adata, 7, h_llm=h, seed=3, **FAST)
    _assert_unchanged(adata, snap)
    b = gat_domains(adata, 7, h_llm=h, seed=3, **FAST)
    assert a.dtype == np.int64 and a.shape == (adata.n_obs,)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.unique(a), np.arange(7))


def test_gat_domains_without_fsm_reuses_an_existing_graph(demo):
    built = gat_domains(demo, 5, seed=0, **FAST)
    np.testing.assert_array_equal(np.unique(built), np.arange(5))
    with_graph = demo.copy()
    semst.gr.spatial_graph(with_graph)  # the same graph gat_domains builds by default
    snap = _snapshot(with_graph)
    labels, z = gat_domains(with_graph, 5, seed=0, return_embedding=True, **FAST)
    _assert_unchanged(with_graph, snap)
    np.testing.assert_array_equal(labels, built)
    assert z.shape == (demo.n_obs, 30) and z.dtype == np.float32


def test_gat_domains_input_errors(demo):
    adata = demo.copy()
    good_h = np.zeros((adata.n_obs, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="one row per spot"):
        gat_domains(adata, 7, h_llm=good_h[:-1], **FAST)
    bad = good_h.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gat_domains(adata, 7, h_llm=bad, **FAST)
    with pytest.raises(TypeError, match="must hold numbers"):
        gat_domains(adata, 7, h_llm=good_h.astype(str), **FAST)
    with pytest.raises(TypeError, match="integer"):
        gat_domains(adata, 7.5, **FAST)
    with pytest.raises(ValueError, match="n_domains"):
        gat_domains(adata, 0, **FAST)
    with pytest.raises(ValueError, match="lr"):
        gat_domains(adata, 7, lr=-1.0, **FAST)
    with pytest.raises(TypeError, match="AnnData"):
        gat_domains(adata.X, 7, **FAST)
    no_xy = adata.copy()
    del no_xy.obsm["spatial"]
    with pytest.raises(KeyError, match="spatial"):
        gat_domains(no_xy, 7, **FAST)
    logged = adata.copy()
    logged.X = logged.X.copy()
    logged.X.data = np.log1p(logged.X.data)
    with pytest.raises(ValueError, match="non-integer"):
        gat_domains(logged, 7, **FAST)
    snap = _snapshot(adata)
    with pytest.raises(ValueError, match="one row per spot"):
        gat_domains(adata, 7, h_llm=good_h[:10], **FAST)
    _assert_unchanged(adata, snap)
