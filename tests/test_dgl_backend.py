"""The optional DGL backend (``backend="dgl"``).

Everywhere: asking for DGL where it cannot load gives an ImportError that says why and how to fix it,
found without importing DGL. Where DGL imports (the environment .ci/dgl builds from requirements/dgl.lock):
the DGL graph convolutions agree with the torch.sparse ones -- outputs, gradients, training steps, and
``semst.tl.domains`` labels on the bundled demo. Elsewhere those are skipped with the reason; with
``SEMST_REQUIRE_DGL=1`` (set by .ci/dgl) they fail instead of skipping.
"""

from __future__ import annotations

import copy
import inspect
import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import kneighbors_graph

from semst_sc.nn._dgl import (
    DGL_LOCK_FILE,
    DGL_TORCH_WINDOW,
    EDGE_WEIGHT,
    DGLGCNLayer,
    check_dgl_device,
    dgl_problem,
    require_dgl,
    to_dgl_graph,
    use_dgl,
)
from semst_sc.nn._gcn import GCN, GCNLayer
from semst_sc.nn._graph import normalize_adjacency

REQUIRE_DGL = os.environ.get("SEMST_REQUIRE_DGL") == "1"
# float32, different summation order (DGL's SpMM vs torch's CSR matmul): a few ulps of O(1) numbers
ATOL, RTOL = 2e-6, 1e-5


@pytest.fixture(scope="module")
def dgl():
    problem = dgl_problem()
    if problem is not None:
        if REQUIRE_DGL:
            pytest.fail(f"SEMST_REQUIRE_DGL=1 but the DGL backend cannot load here: {problem}")
        pytest.skip(
            f"DGL backend unavailable here: {problem} (.ci/dgl runs these tests in a DGL environment)"
        )
    return require_dgl()


@pytest.fixture(scope="module")
def graphs() -> dict[str, sp.csr_matrix]:
    """Two real graphs on 400 spots: a spatial 6-NN graph on jittered grid coordinates (nearly constant
    degree) and a 10-NN expression graph (degrees spread widely), both symmetrised as semst builds them."""
    rng = np.random.default_rng(0)
    side = 20
    xy = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2).astype(float)
    xy += rng.normal(scale=0.15, size=xy.shape)
    expr = rng.poisson(rng.gamma(2.0, 1.0, size=(side * side, 30))).astype(float)
    out = {}
    for name, data, k in (("spatial", xy, 6), ("feature", np.log1p(expr), 10)):
        a = kneighbors_graph(data, k, mode="connectivity", include_self=False)
        out[name] = sp.csr_matrix(a.maximum(a.T))
    return out


def _dense_of(g) -> np.ndarray:
    """A DGL graph's normalised weights as the (small, test-sized) dense matrix M with M[dst, src] = w."""
    src, dst = (t.numpy() for t in g.edges())
    m = sp.coo_matrix((g.edata[EDGE_WEIGHT].numpy(), (dst, src)), shape=(g.num_nodes(), g.num_nodes()))
    return m.toarray()


# --- everywhere ------------------------------------------------------------------------------------------


def test_require_dgl_here_imports_or_explains():
    problem = dgl_problem()
    if problem is None:  # the DGL environment: it really imports
        dgl = require_dgl()
        assert dgl.__name__ == "dgl"
        assert "dgl" in sys.modules
        return
    had_dgl = "dgl" in sys.modules
    with pytest.raises(ImportError) as err:
        require_dgl()
    msg = str(err.value)
    assert problem in msg
    assert torch.__version__.split("+")[0] in msg or "not installed" in msg
    assert "pip install 'semst-sc[dgl]'" in msg
    assert DGL_LOCK_FILE in msg
    assert f"{DGL_TORCH_WINDOW[0]} - {DGL_TORCH_WINDOW[1]}" in msg
    assert "backend='torch'" in msg
    assert ("dgl" in sys.modules) == had_dgl, "the check must not import dgl"
    # the layer and the switch fail the same way, before building anything
    with pytest.raises(ImportError, match="semst-sc\\[dgl\\]"):
        DGLGCNLayer(4, 2)
    gcn = GCN(4, 3, 2)
    state = copy.deepcopy(gcn.state_dict())
    with pytest.raises(ImportError, match="semst-sc\\[dgl\\]"):
        use_dgl(gcn)
    assert type(gcn.layer1) is GCNLayer and type(gcn.layer2) is GCNLayer
    assert all(torch.equal(state[k], v) for k, v in gcn.state_dict().items())


def test_domains_backend_dgl_fails_first_where_dgl_cannot_load():
    import semst_sc as semst

    if dgl_problem() is None:  # the DGL environment: test_domains_same_labels_on_both_backends covers it
        assert "backend" in inspect.signature(semst.tl.domains).parameters
        return
    adata = semst.datasets.demo()
    before = {slot: set(getattr(adata, slot).keys()) for slot in ("obsm", "obsp", "uns", "layers")}
    columns, x = list(adata.obs.columns), adata.X.copy()
    with pytest.raises(ImportError, match="semst-sc\\[dgl\\]"):
        semst.tl.domains(adata, n_domains=7, backend="dgl", progress=False)
    assert {slot: set(getattr(adata, slot).keys()) for slot in before} == before
    assert list(adata.obs.columns) == columns
    assert (adata.X != x).nnz == 0


def test_torch_outside_dgl_window_is_named_before_install():
    msg = dgl_problem(torch_version="2.13.0", dgl_dir=None)
    assert "not installed" in msg
    assert "torch 2.13.0 is outside the window" in msg
    assert f"{DGL_TORCH_WINDOW[0]} - {DGL_TORCH_WINDOW[1]}" in msg
    inside = dgl_problem(torch_version="2.2.1+cu121", dgl_dir=None)
    assert "not installed" in inside
    assert "outside" not in inside


def test_foreign_dglbackend_is_reported(monkeypatch):
    monkeypatch.setenv("DGLBACKEND", "tensorflow")
    msg = dgl_problem()
    assert msg is not None
    assert "DGLBACKEND='tensorflow'" in msg


# --- where DGL imports -------------------------------------------------------------------------------------


def test_installed_dgl_library_list_decides(dgl):
    from pathlib import Path

    folder = Path(dgl.__file__).parent
    assert dgl_problem(torch_version=torch.__version__, dgl_dir=folder) is None
    msg = dgl_problem(torch_version="2.13.0", dgl_dir=folder)
    assert "torch 2.13.0" in msg
    assert "`import dgl` would fail" in msg
    # torch 2.2.2 exists, yet DGL 2.1.0 has no library for it: the list, not a range, decides
    assert dgl_problem(torch_version="2.2.2", dgl_dir=folder) is not None


@pytest.mark.parametrize("norm", ["row", "sym"])
@pytest.mark.parametrize("name", ["spatial", "feature"])
def test_dgl_normalisation_equals_ours(dgl, graphs, name, norm):
    a = graphs[name]
    ours = normalize_adjacency(a, norm=norm).to_dense().numpy()
    g = to_dgl_graph(a, norm=norm)
    assert g.num_edges() == a.nnz + a.shape[0]  # one self loop per node
    np.testing.assert_allclose(_dense_of(g), ours, rtol=1e-6, atol=1e-7)

    # DGL's own GraphConv normalisation on the unweighted graph with self loops is the same operator
    support = torch.randn(a.shape[0], 5, generator=torch.Generator().manual_seed(1))
    conv = dgl.nn.GraphConv(5, 5, norm="right" if norm == "row" else "both", weight=False, bias=False)
    got = conv(dgl.add_self_loop(dgl.remove_self_loop(g)), support)
    np.testing.assert_allclose(got.numpy(), ours @ support.numpy(), rtol=RTOL, atol=ATOL)


def test_existing_self_loops_and_no_self_loops(dgl, graphs):
    a = graphs["spatial"].tolil()
    a.setdiag(3.0)  # weighted self loops: replaced by exactly one unit loop, like normalize_adjacency
    a = a.tocsr()
    row = a.indices[a.indptr[0] : a.indptr[1]]
    k = int(np.flatnonzero(row != 0)[0])
    j = int(row[k])
    a.data[a.indptr[0] + k] = 0.0  # explicit zeros (0 -- j, both directions) are not edges
    a.data[a.indptr[j] + np.flatnonzero(a.indices[a.indptr[j] : a.indptr[j + 1]] == 0)[0]] = 0.0
    assert a.nnz == graphs["spatial"].nnz + a.shape[0]
    np.testing.assert_allclose(
        _dense_of(to_dgl_graph(a)), normalize_adjacency(a).to_dense().numpy(), atol=1e-7
    )

    # without self loops, an isolated spot aggregates nothing (zero row) on both backends
    b = graphs["feature"].tolil()
    b[5, :] = 0
    b[:, 5] = 0
    b = b.tocsr()
    b.eliminate_zeros()
    torch.manual_seed(0)
    layer = GCNLayer(8, 3)
    twin = DGLGCNLayer(8, 3)
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(b.shape[0], 8)
    adj = normalize_adjacency(b, add_self_loops=False)
    g = to_dgl_graph(b, add_self_loops=False)
    want = layer(x, adj)
    for got in (twin(x, adj), twin(x, g)):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(want[5], layer.bias.expand(3))


@pytest.mark.parametrize("norm", ["row", "sym"])
@pytest.mark.parametrize("graph_from", ["torch", "dgl"])
@pytest.mark.parametrize("sparse_x", [False, True])
def test_layer_parity_forward_backward_step(dgl, graphs, norm, graph_from, sparse_x):
    a = graphs["feature"]
    adj = normalize_adjacency(a, norm=norm)
    g = adj if graph_from == "torch" else to_dgl_graph(a, norm=norm)
    torch.manual_seed(0)
    ref = GCNLayer(30, 16)
    torch.manual_seed(0)
    twin = DGLGCNLayer(30, 16)
    # the same seed gives the same initial weights (same layout, same initialisation)
    torch.testing.assert_close(twin.state_dict(), ref.state_dict(), rtol=0, atol=0)
    assert list(twin.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]

    rng = np.random.default_rng(3)
    x_np = (rng.random((a.shape[0], 30)) < 0.2) * rng.gamma(2.0, 1.0, (a.shape[0], 30))
    target = torch.from_numpy(rng.normal(size=(a.shape[0], 16))).float()
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=5e-4) for m in (ref, twin)]
    xs, outs, losses = [], [], []
    for m, opt, graph in ((ref, opts[0], adj), (twin, opts[1], g)):
        if sparse_x:
            x = torch.sparse_csr_tensor(*(torch.from_numpy(v) for v in _csr_parts(x_np)), size=x_np.shape)
        else:
            x = torch.from_numpy(x_np).float().requires_grad_(True)
        xs.append(x)
        opt.zero_grad()
        out = m(x, graph)
        loss = ((torch.relu(out) - target) ** 2).mean()
        loss.backward()
        opt.step()
        outs.append(out.detach())
        losses.append(loss.detach())
    torch.testing.assert_close(outs[1], outs[0], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(losses[1], losses[0], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(twin.weight.grad, ref.weight.grad, rtol=RTOL, atol=1e-7)
    torch.testing.assert_close(twin.bias.grad, ref.bias.grad, rtol=RTOL, atol=1e-7)
    if not sparse_x:
        torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=RTOL, atol=1e-8)
    # after one Adam step the weights still agree
    torch.testing.assert_close(twin.state_dict(), ref.state_dict(), rtol=RTOL, atol=1e-6)


def _csr_parts(dense: np.ndarray):
    m = sp.csr_matrix(dense.astype(np.float32))
    return m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data


def test_gcn_parity_with_dropout_over_training(dgl, graphs):
    """A two-layer GCN with dropout trained 5 steps: the DGL copy follows the torch one step by step."""
    a = graphs["spatial"]
    adj = normalize_adjacency(a)
    torch.manual_seed(7)
    ref = GCN(30, 24, 8, dropout=0.3)
    twin = use_dgl(copy.deepcopy(ref))
    assert type(twin.layer1) is DGLGCNLayer and type(twin.layer2) is DGLGCNLayer
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(a.shape[0], 30))).float()
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (ref, twin)]
    for step in range(5):
        outs = []
        for m, opt in zip((ref, twin), opts):
            torch.manual_seed(100 + step)  # same dropout masks for both
            opt.zero_grad()
            out = m(x, adj)
            (out.pow(2).mean() - out.mean()).backward()
            opt.step()
            outs.append(out.detach())
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
        for (k, p), (_, q) in zip(ref.named_parameters(), twin.named_parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=f"step {step} {k}")
    twin.eval()
    ref.eval()
    torch.testing.assert_close(twin(x, adj), ref(x, adj), rtol=1e-4, atol=1e-5)


def test_use_dgl_keeps_parameters_state_and_rng(dgl):
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"a": GCN(6, 5, 4), "b": GCN(6, 5, 4)})
    params = [id(p) for p in model.parameters()]
    keys = list(model.state_dict())
    rng_before = torch.get_rng_state()
    use_dgl(model)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert [id(p) for p in model.parameters()] == params
    assert list(model.state_dict()) == keys
    assert sum(isinstance(m, DGLGCNLayer) for m in model.modules()) == 4
    with pytest.raises(TypeError, match="DGLGCNLayer"):
        use_dgl(GCNLayer(3, 2))


def test_device_check(dgl):
    check_dgl_device("cpu")
    check_dgl_device(torch.device("cpu"))
    # a device DGL has no support for (as a CUDA device is for the CPU-only DGL wheels on PyPI)
    with pytest.raises(RuntimeError, match=r"cannot run on device 'meta'.*device='cpu'"):
        check_dgl_device("meta")


def test_dgl_inputs_are_checked(dgl, graphs):
    a = graphs["spatial"]
    layer = DGLGCNLayer(4, 2)
    x = torch.randn(a.shape[0], 4)
    with pytest.raises(TypeError, match="sparse adjacency"):
        layer(x, normalize_adjacency(a).to_dense())
    with pytest.raises(KeyError, match="to_dgl_graph"):
        layer(x, dgl.graph(([0, 1], [1, 0]), num_nodes=a.shape[0]))
    directed = sp.csr_matrix(([1.0], ([0], [1])), shape=(3, 3))
    with pytest.raises(ValueError, match="symmetric"):
        to_dgl_graph(directed, norm="sym")
    with pytest.raises(ValueError, match="norm"):
        to_dgl_graph(a, norm="left")
    with pytest.raises(TypeError, match=r"scipy\.sparse"):
        to_dgl_graph(np.eye(3))


@pytest.mark.slow
def test_domains_same_labels_on_both_backends(dgl):
    """``tl.domains`` end to end on the bundled demo: the DGL backend gives the torch backend's domains."""
    import semst_sc as semst

    adata = semst.datasets.demo()
    # small widths and few epochs keep this fast; parity, not accuracy, is tested
    kw = dict(n_domains=7, n_epochs=5, n_top_genes=300, hidden_dim=32, latent_dim=16, seed=0, progress=False)
    runs = {b: semst.tl.domains(adata, backend=b, copy=True, **kw) for b in ("torch", "dgl")}
    labels = {b: ad.obs["semst_domain"].to_numpy() for b, ad in runs.items()}
    assert adjusted_rand_score(labels["torch"], labels["dgl"]) >= 0.99
    np.testing.assert_allclose(
        runs["dgl"].obsm["X_semst"], runs["torch"].obsm["X_semst"], rtol=1e-3, atol=1e-4
    )
    np.testing.assert_allclose(
        runs["dgl"].uns["semst"]["history"]["loss"], runs["torch"].uns["semst"]["history"]["loss"], rtol=1e-5
    )
    assert runs["dgl"].uns["semst"]["params"]["backend"] == "dgl"
    assert runs["torch"].uns["semst"]["params"]["backend"] == "torch"
