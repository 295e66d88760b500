"""Tests of semst_sc.nn: graph normalisation, GCN, fusions (FSM), ZINB, losses, the SemST module."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.stats
import torch

from semst_sc import nn as snn
from semst_sc._constants import FUSIONS
from semst_sc.nn._losses import _edge_structure, _EdgeDot, _SampledPairs


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread in these tests: fast and stable on a busy 2-core machine (restored afterwards)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _tiny_graph(n: int = 6, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    a = (rng.random((n, n)) < 0.4).astype(float) * rng.uniform(0.5, 3.0, (n, n))  # weighted on purpose
    a = np.maximum(a, a.T)
    np.fill_diagonal(a, 0)
    a[0, 0] = 2.0  # an existing self-loop must not be counted twice
    return sp.csr_matrix(a)


def _dense(t: torch.Tensor) -> np.ndarray:
    return t.to_dense().numpy()


# -- graphs -------------------------------------------------------------------------------------------------
def test_row_normalisation_equals_dense_formula():
    a = _tiny_graph()
    before = a.copy()
    b = (a.toarray() != 0).astype(float)
    np.fill_diagonal(b, 1.0)  # A + I on the binarised graph
    expected = b / b.sum(1, keepdims=True)
    got = snn.normalize_adjacency(a, norm="row", dtype=torch.float64)
    assert got.layout == torch.sparse_csr
    np.testing.assert_allclose(_dense(got), expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(_dense(got).sum(1), 1.0)
    assert (a != before).nnz == 0  # the input is not modified


def test_sym_normalisation_equals_dense_formula():
    a = _tiny_graph(seed=1)
    b = (a.toarray() != 0).astype(float)
    np.fill_diagonal(b, 1.0)
    d = 1 / np.sqrt(b.sum(1))
    expected = d[:, None] * b * d[None, :]
    got = snn.normalize_adjacency(a, norm="sym", dtype=torch.float64)
    np.testing.assert_allclose(_dense(got), expected, atol=1e-15)


def test_normalisation_without_self_loops_keeps_isolated_rows_zero():
    a = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float))
    got = _dense(snn.normalize_adjacency(a, add_self_loops=False, dtype=torch.float64))
    np.testing.assert_allclose(got, [[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_normalize_adjacency_rejects_bad_input():
    with pytest.raises(TypeError, match=r"scipy\.sparse"):
        snn.normalize_adjacency(np.eye(3))
    with pytest.raises(ValueError, match="square"):
        snn.normalize_adjacency(sp.csr_matrix(np.ones((2, 3))))
    with pytest.raises(ValueError, match="'row', 'sym'"):
        snn.normalize_adjacency(sp.eye(3, format="csr"), norm="left")


def test_edge_index_drops_self_loops_and_binarises():
    a = _tiny_graph()
    rows, cols = snn.edge_index(a)
    assert rows.dtype == torch.int64
    assert not torch.any(rows == cols)
    b = a.toarray() != 0
    np.fill_diagonal(b, False)
    assert len(rows) == b.sum()
    assert b[rows.numpy(), cols.numpy()].all()
    r2, _ = snn.edge_index(a, self_loops=True)
    assert len(r2) == len(rows) + 1


# -- GCN ----------------------------------------------------------------------------------------------------
def test_gcn_layer_sparse_and_dense_x_agree_in_value_and_gradient():
    rng = np.random.default_rng(0)
    n, m = 40, 30
    x = rng.random((n, m)) * (rng.random((n, m)) < 0.2)
    adj = snn.normalize_adjacency(_tiny_graph(n, seed=3), dtype=torch.float64)
    layer = snn.GCNLayer(m, 7).double()
    xd = torch.from_numpy(x)
    xs = snn.scipy_to_torch_csr(sp.csr_matrix(x), dtype=torch.float64)
    out_d = layer(xd, adj)
    g_d = torch.autograd.grad(out_d.square().sum(), [layer.weight, layer.bias])
    out_s = layer(xs, adj)
    g_s = torch.autograd.grad(out_s.square().sum(), [layer.weight, layer.bias])
    expected = _dense(adj) @ (x @ layer.weight.detach().numpy()) + layer.bias.detach().numpy()
    np.testing.assert_allclose(out_d.detach().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(out_s.detach().numpy(), expected, rtol=1e-12)
    for a, b in zip(g_d, g_s, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_gcn_gradient_through_the_graph_matches_dense_adjacency():
    n, m = 25, 8
    adj = snn.normalize_adjacency(_tiny_graph(n, seed=5), dtype=torch.float64)  # not symmetric (row norm)
    gcn = snn.GCN(m, 6, 3).double()
    x = torch.randn(n, m, dtype=torch.float64)
    out_sparse = gcn(x, adj)
    g1 = torch.autograd.grad(out_sparse.sum(), list(gcn.parameters()))
    out_dense = gcn(x, adj.to_dense())
    g2 = torch.autograd.grad(out_dense.sum(), list(gcn.parameters()))
    assert out_sparse.shape == (n, 3)
    torch.testing.assert_close(out_sparse, out_dense)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)


def test_feature_matmul_rejects_coo():
    with pytest.raises(TypeError, match="CSR"):
        snn.feature_matmul(torch.eye(3).to_sparse_coo(), torch.ones(3, 2))


# -- fusion -------------------------------------------------------------------------------------------------
def test_fsm_is_identity_when_alpha_beta_are_zero():
    fsm = snn.FSM(16, 12)
    with torch.no_grad():
        fsm.modulation[-1].weight.zero_()
        fsm.modulation[-1].bias.zero_()
    z = torch.randn(9, 16)
    assert torch.equal(fsm(z, torch.randn(9, 12)), z)


def test_fsm_starts_near_identity_and_modulates():
    torch.manual_seed(0)
    fsm = snn.FSM(16, 12)
    z, c = torch.randn(50, 16), torch.randn(50, 12)
    alpha, beta = fsm.modulation_params(c)
    assert alpha.shape == beta.shape == (50, 16)
    assert 0 < alpha.abs().max() < 0.1 and 0 < beta.abs().max() < 0.1
    torch.testing.assert_close(fsm(z, c), (1 + alpha) * z + beta)


def test_fsm_gradients_reach_every_layer_of_the_conditioning_mlp():
    torch.manual_seed(0)
    fsm = snn.FSM(8, 20, dropout=0.0)
    z = torch.randn(30, 8)
    c = torch.randn(30, 20)
    fsm(z, c).square().sum().backward()
    for name, p in fsm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_fsm_dimensions_follow_the_reference():
    # SemST sizes: features 2d = 256, cond L = 384 -> L/2 = 192 -> d = 128 -> 1.2 d = 154 -> 4d = 512
    fsm = snn.FSM(256, 384)
    shapes = [tuple(m.weight.shape) for m in fsm.modules() if isinstance(m, torch.nn.Linear)]
    assert shapes == [(192, 384), (128, 192), (154, 128), (512, 154)]


def test_fsm_rejects_wrong_shapes():
    fsm = snn.FSM(8, 4)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        fsm(torch.randn(3, 7), torch.randn(3, 4))
    with pytest.raises(ValueError, match="h_llm"):
        fsm(torch.randn(3, 8), torch.randn(2, 4))


@pytest.mark.parametrize("name", FUSIONS)
def test_every_fusion_runs_forward_and_backward(name):
    torch.manual_seed(0)
    llm_dim = None if name == "none" else 24
    fusion = snn.make_fusion(name, 32, llm_dim, 20, 16)
    z = torch.randn(11, 32, requires_grad=True)
    h = None if name == "none" else torch.randn(11, 24)
    out = fusion(z, h)
    assert out.shape == (11, 16)
    out.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert all(p.grad is not None for p in fusion.parameters())


def test_make_fusion_errors():
    with pytest.raises(ValueError, match="'fsm', 'concat'"):
        snn.make_fusion("film", 8, 4, 8, 4)
    with pytest.raises(ValueError, match="fusion='none'"):
        snn.make_fusion("fsm", 8, None, 8, 4)
    with pytest.raises(ValueError, match="h_llm"):
        snn.make_fusion("concat", 8, 4, 8, 4)(torch.randn(3, 8), None)
    with pytest.raises(ValueError, match="divisor"):
        snn.make_fusion("cross_attention", 10, 4, 8, 4, n_tokens=3)


def test_none_fusion_ignores_llm():
    f = snn.make_fusion("none", 8, None, 8, 4)
    z = torch.randn(5, 8)
    torch.testing.assert_close(f(z, None), f(z, torch.randn(5, 99)))


# -- ZINB ---------------------------------------------------------------------------------------------------
def test_zinb_nll_matches_scipy_for_counts():
    rng = np.random.default_rng(0)
    shape = (20, 15)
    x = rng.poisson(2.0, shape).astype(float)
    mu = rng.uniform(0.1, 8.0, shape)
    theta = rng.uniform(0.2, 20.0, shape)
    pi = rng.uniform(0.01, 0.9, shape)
    nb = scipy.stats.nbinom(theta, theta / (theta + mu))
    logp = np.where(x == 0, np.log(pi + (1 - pi) * nb.pmf(0)), np.log1p(-pi) + nb.logpmf(x))
    t = [torch.from_numpy(v) for v in (x, mu, theta, pi)]
    got = snn.zinb_nll(*t, ridge=0.0, eps=0.0, reduction="none").numpy()
    np.testing.assert_allclose(got, -logp, rtol=1e-10, atol=1e-12)
    # default eps only shifts it negligibly; the ridge adds ridge * mean(pi^2)
    mean = float(snn.zinb_nll(*t, ridge=0.05))
    np.testing.assert_allclose(mean, -logp.mean() + 0.05 * (pi**2).mean(), rtol=1e-6)


def test_zinb_nll_evaluates_non_integer_targets():
    x = torch.tensor([[0.0, 0.3, 2.7, 9.9]], dtype=torch.float64)
    ones = torch.ones_like(x)
    val = snn.zinb_nll(x, 2 * ones, 3 * ones, 0.2 * ones)
    assert torch.isfinite(val)
    # the continuous extension lies between the values at the neighbouring integers
    xs = torch.tensor([[2.0, 2.7, 3.0]], dtype=torch.float64)
    o = torch.ones_like(xs)
    per = snn.zinb_nll(xs, 2 * o, 3 * o, 0.2 * o, ridge=0, reduction="none")
    assert per[0, 0] < per[0, 1] < per[0, 2]


@pytest.mark.parametrize("mode", ["faithful", "counts"])
@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("block_rows", [None, 2])
def test_fused_zinb_loss_equals_plain_loss_and_gradient(mode, extreme, block_rows, monkeypatch):
    if block_rows is not None:  # several element-wise blocks inside each chunk of head products
        from semst_sc.nn import _zinb

        monkeypatch.setattr(_zinb, "_pick_block_rows", lambda m, rows, device: block_rows)
    torch.manual_seed(1)
    n, m, hid = 37, 11, 8
    dec = snn.ZINBDecoder(5, hid, m, mode=mode).double()
    with torch.no_grad():
        dec.heads.weight.mul_(3.0)
        dec.heads.bias.normal_(0, 2.0)
        if extreme:  # push some logits into the clamps of mu and theta
            dec.heads.bias[:m].uniform_(-16.0, 16.0)
            dec.heads.bias[m : 2 * m].uniform_(-12.0, 12.0)
            dec.heads.bias[m : m + 3] = 1e4 + 5
    x = torch.poisson(torch.rand(n, m, dtype=torch.float64) * 3)
    if mode == "faithful":
        x = x * torch.rand(n, m, dtype=torch.float64) * 2  # non-integer, like the scaled matrix
    sf = torch.rand(n, dtype=torch.float64) + 0.5 if mode == "counts" else None
    h = torch.randn(n, hid, dtype=torch.float64, requires_grad=True)
    params = [h, dec.heads.weight, dec.heads.bias]
    plain = snn.zinb_nll(x, *dec.params(h, sf))
    g_plain = torch.autograd.grad(plain, params)
    target = snn.ZINBTarget(sp.csr_matrix(x.numpy()), dtype=torch.float64)
    for chunk in (1, 6, None):
        fused = dec.nll(h, target, sf, chunk_rows=chunk)
        g_fused = torch.autograd.grad(fused, params)
        torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
        for a, b in zip(g_plain, g_fused, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    with torch.no_grad():  # forward only
        torch.testing.assert_close(dec.nll(h, x, sf), plain.detach(), rtol=1e-12, atol=1e-12)


def test_zinb_target_keeps_only_nonzeros_and_rejects_bad_values():
    x = sp.random(30, 20, density=0.1, random_state=0, format="csr") * 5
    t = snn.ZINBTarget(x)
    assert t.nnz == x.nnz and t.shape == (30, 20)
    np.testing.assert_allclose(t.dense().numpy(), x.toarray(), rtol=1e-6)
    with pytest.raises(ValueError, match="negative"):
        snn.ZINBTarget(-x)
    with pytest.raises(TypeError):
        snn.ZINBTarget([[1, 2]])


def test_zinb_decoder_modes_and_size_factors():
    dec = snn.ZINBDecoder(4, 8, 6, mode="counts")
    z = torch.randn(10, 4)
    with pytest.raises(ValueError, match="size_factors"):
        dec(z)
    mu, theta, pi = dec(z, torch.full((10,), 2.0))
    mu1, _, _ = dec(z, torch.ones(10))
    torch.testing.assert_close(mu, 2 * mu1)
    assert ((pi > 0) & (pi < 1)).all() and (theta >= 1e-4).all()
    with pytest.raises(ValueError, match="counts"):
        snn.ZINBDecoder(4, 8, 6)(z, torch.ones(10))
    with pytest.raises(ValueError, match="'faithful', 'counts'"):
        snn.ZINBDecoder(4, 8, 6, mode="nb")


# -- losses -------------------------------------------------------------------------------------------------
def test_correlation_loss_is_zero_for_identical_orthogonal_columns():
    q, _ = torch.linalg.qr(torch.randn(50, 6, dtype=torch.float64))
    assert float(snn.correlation_reduction_loss(q, q)) == pytest.approx(0.0, abs=1e-14)
    assert float(snn.correlation_reduction_loss(q * 3.0, q)) == pytest.approx(0.0, abs=1e-14)  # scale-free


def test_correlation_loss_matches_direct_formula():
    torch.manual_seed(0)
    h1, h2 = torch.randn(40, 5, dtype=torch.float64), torch.randn(40, 5, dtype=torch.float64)
    a = h1 / h1.norm(dim=0)
    b = h2 / h2.norm(dim=0)
    c = (a.T @ b).numpy()
    off = c[~np.eye(5, dtype=bool)]
    expected = ((np.diag(c) - 1) ** 2).mean() + (off**2).mean()
    assert float(snn.correlation_reduction_loss(h1, h2)) == pytest.approx(expected, rel=1e-12)


def test_correlation_loss_gradient_matches_normalising_the_columns_first():
    """The loss divides h1^T h2 by the column norms instead of normalising N x d copies: same value and
    gradient as the normalise-first formula, also with an all-zero column (cosine 0 with everything)."""
    torch.manual_seed(1)
    h1, h2 = torch.randn(60, 6, dtype=torch.float64), torch.randn(60, 6, dtype=torch.float64)
    h1[:, 2] = 0.0
    grads = []
    for fn in (snn.correlation_reduction_loss, _normalise_first_correlation_loss):
        a, b = h1.clone().requires_grad_(), h2.clone().requires_grad_()
        loss = fn(a, b)
        loss.backward()
        grads.append((float(loss), a.grad, b.grad))
    (l0, ga0, gb0), (l1, ga1, gb1) = grads
    assert np.isfinite(l0) and l0 == pytest.approx(l1, rel=1e-12)
    torch.testing.assert_close(ga0, ga1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gb0, gb1, rtol=1e-10, atol=1e-12)
    assert ga0[:, 2].abs().max() > 0  # the zero column still gets a gradient, as with normalising first


def _normalise_first_correlation_loss(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    c = torch.nn.functional.normalize(h1, dim=0, eps=1e-12).T @ torch.nn.functional.normalize(
        h2, dim=0, eps=1e-12
    )
    d = c.shape[0]
    diag = torch.diagonal(c)
    return (diag - 1.0).square().mean() + (c.square().sum() - diag.square().sum()) / (d * (d - 1))


def _dense_spatial_terms(z: torch.Tensor, adj: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The reference's dense computation over N x N (fine for tiny N in a test)."""
    zn = torch.nn.functional.normalize(z, dim=1)
    psi = zn @ zn.T
    pos = torch.from_numpy(adj.astype(bool))
    neg = ~pos
    neg.fill_diagonal_(False)
    sp_neg = torch.nn.functional.softplus(psi[neg])
    sp_pos = torch.nn.functional.softplus(-psi[pos])
    return sp_pos, sp_neg, int(pos.sum()), int(neg.sum())


def test_spatial_loss_exact_mode_equals_dense_computation():
    torch.manual_seed(0)
    n = 40
    a = _tiny_graph(n, seed=2)
    rows, cols = snn.edge_index(a)
    z = torch.randn(n, 5, dtype=torch.float64, requires_grad=True)
    sp_pos, sp_neg, _, _ = _dense_spatial_terms(z, _adj_no_diag(a))
    ref = (sp_pos.sum() + sp_neg.sum()) / (2 * n * n)
    bal = 0.5 * (sp_pos.mean() + sp_neg.mean())
    got = snn.spatial_regularization_loss(z, rows, cols, n_negatives=None)
    torch.testing.assert_close(got, ref)
    g_got = torch.autograd.grad(got, z)[0]
    g_ref = torch.autograd.grad(ref, z)[0]
    torch.testing.assert_close(g_got, g_ref)
    torch.testing.assert_close(
        snn.spatial_regularization_loss(z, rows, cols, n_negatives=None, weighting="balanced"), bal
    )


def _adj_no_diag(a: sp.csr_matrix) -> np.ndarray:
    b = a.toarray() != 0
    np.fill_diagonal(b, False)
    return b


def test_spatial_loss_sampled_estimate_approaches_exact():
    torch.manual_seed(0)
    n = 60
    a = _tiny_graph(n, seed=4)
    rows, cols = snn.edge_index(a)
    z = torch.randn(n, 4, dtype=torch.float64)
    exact = float(snn.spatial_regularization_loss(z, rows, cols, n_negatives=None, weighting="balanced"))
    gen = torch.Generator().manual_seed(0)
    many = float(
        snn.spatial_regularization_loss(z, rows, cols, n_negatives=20000, generator=gen, weighting="balanced")
    )
    few = [
        float(
            snn.spatial_regularization_loss(z, rows, cols, n_negatives=2, generator=gen, weighting="balanced")
        )
        for _ in range(5)
    ]
    assert many == pytest.approx(exact, rel=1e-3)
    assert max(abs(f - exact) for f in few) > abs(many - exact)  # it is an estimate: more draws, closer
    ex_ref = float(snn.spatial_regularization_loss(z, rows, cols, n_negatives=None))
    many_ref = float(snn.spatial_regularization_loss(z, rows, cols, n_negatives=20000, generator=gen))
    assert many_ref == pytest.approx(ex_ref, rel=1e-3)


def test_spatial_loss_positive_gradient_matches_gather_autograd():
    torch.manual_seed(3)
    n = 30
    rows, cols = snn.edge_index(_tiny_graph(n, seed=7))
    z = torch.randn(n, 6, dtype=torch.float64, requires_grad=True)
    zn = torch.nn.functional.normalize(z, dim=1)
    s = _edge_structure(rows, cols, n, z.device)
    w = torch.randn(len(rows), dtype=torch.float64)
    got = (_EdgeDot.apply(zn, s) * w).sum()
    ref = ((zn[s.rows] * zn[s.cols]).sum(1) * w).sum()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(
        torch.autograd.grad(got, z, retain_graph=True)[0], torch.autograd.grad(ref, z)[0]
    )


@pytest.mark.parametrize("sort_within_rows", [False, True])
def test_sampled_negative_pairs_match_gathers(sort_within_rows):
    # the negatives' CSR layout (rounds of one partner per spot, some dropped) gives the plain gathered
    # dot products and their gradient, pair for pair; sorted within rows, as off the CPU (for cuSPARSE),
    # the same, here on the CPU where it can run
    gen = torch.Generator().manual_seed(3)
    n, d, k = 200, 16, 7
    z = torch.randn(n, d, generator=gen, requires_grad=True)
    i = torch.arange(n).repeat(k)
    j = torch.randint(0, n, (n * k,), generator=gen)
    keep = (i != j) & (torch.rand(n * k, generator=gen) > 0.2)
    pairs = _SampledPairs(j, keep, n, k, sort_within_rows=sort_within_rows)
    assert pairs.n_edges == int(keep.sum())
    rows = torch.repeat_interleave(torch.arange(n), pairs.crow.diff())
    key = rows * n + pairs.cols
    assert bool((key.diff() >= 0).all()) == sort_within_rows  # sorted only when asked (the draws are not)
    # the same multiset of pairs as the draw, grouped by spot
    assert sorted(zip((rows * n + pairs.cols).tolist())) == sorted(zip((i * n + j)[keep].tolist()))
    assert torch.equal(rows[pairs.perm_t], pairs.col_t)
    assert torch.equal(
        pairs.cols[pairs.perm_t], torch.repeat_interleave(torch.arange(n), pairs.crow_t.diff())
    )
    w = torch.randn(pairs.n_edges, generator=gen)
    got = (_EdgeDot.apply(z, pairs) * w).sum()
    ref = ((z[rows] * z[pairs.cols]).sum(1) * w).sum()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(torch.autograd.grad(got, z)[0], torch.autograd.grad(ref, z)[0])
    none = _SampledPairs(j, torch.zeros_like(keep), n, k)
    assert none.n_edges == 0 and int(none.crow[-1]) == 0


def test_spatial_loss_is_reproducible_with_a_generator_and_validates():
    n = 50
    rows, cols = snn.edge_index(_tiny_graph(n, seed=8))
    z = torch.randn(n, 4)
    v1 = snn.spatial_regularization_loss(z, rows, cols, generator=torch.Generator().manual_seed(5))
    v2 = snn.spatial_regularization_loss(z, rows, cols, generator=torch.Generator().manual_seed(5))
    assert torch.equal(v1, v2)
    with pytest.raises(ValueError, match="'reference', 'balanced'"):
        snn.spatial_regularization_loss(z, rows, cols, weighting="mean")
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        snn.spatial_regularization_loss(z[:10], rows, cols)


# -- module -------------------------------------------------------------------------------------------------
def _module_inputs(n=40, m=12, llm=9, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.0, (n, m)).astype(np.float32)
    a_spa = snn.normalize_adjacency(_tiny_graph(n, seed=seed))
    a_fea = snn.normalize_adjacency(_tiny_graph(n, seed=seed + 1))
    edges = snn.edge_index(_tiny_graph(n, seed=seed))
    return (
        torch.from_numpy(x),
        a_spa,
        a_fea,
        torch.from_numpy(rng.normal(size=(n, llm)).astype(np.float32)),
        edges,
    )


@pytest.mark.parametrize("fusion", FUSIONS)
def test_semst_module_shapes_and_loss(fusion):
    torch.manual_seed(0)
    x, a_spa, a_fea, h, edges = _module_inputs()
    llm_dim = None if fusion == "none" else h.shape[1]
    mod = snn.SemSTModule(12, llm_dim, hidden=16, latent=8, fusion=fusion)
    out = mod(x, a_spa, a_fea, None if fusion == "none" else h)
    assert out.z.shape == (40, 8) and out.h_spa.shape == out.h_fea.shape == (40, 8)
    assert out.mu.shape == out.theta.shape == out.pi.shape == (40, 12)
    total, parts = mod.loss(out, x, edges)
    assert set(parts) == {"loss", "zinb", "cr", "spatial"}
    assert parts["loss"] == pytest.approx(
        parts["zinb"] + 0.1 * parts["cr"] + 0.1 * parts["spatial"], rel=1e-5
    )
    assert parts["zinb"] == pytest.approx(
        snn.zinb_nll(x, out.mu, out.theta, out.pi).detach().item(), rel=1e-5
    )
    total.backward()
    assert all(p.grad is not None for p in mod.parameters())


def test_semst_module_sparse_x_equals_dense_x_and_decode_flag():
    torch.manual_seed(0)
    x, a_spa, a_fea, h, _ = _module_inputs()
    mod = snn.SemSTModule(12, 9, hidden=16, latent=8).double()
    xd = x.double()
    xs = snn.scipy_to_torch_csr(sp.csr_matrix(xd.numpy()), dtype=torch.float64)
    a_spa, a_fea, h = a_spa.double(), a_fea.double(), h.double()
    o1 = mod(xd, a_spa, a_fea, h, decode=False)
    o2 = mod(xs, a_spa, a_fea, h, decode=False)
    assert o1.mu is None
    torch.testing.assert_close(o1.z, o2.z)


def test_propagated_input_gives_the_same_embedding_and_gradients():
    """(A X) W computed from A X made once is A (X W): same output and parameter gradients, dense or sparse x."""
    torch.manual_seed(0)
    x, a_spa, a_fea, h, edges = _module_inputs()
    mod = snn.SemSTModule(12, 9, hidden=16, latent=8).double()
    a_spa, a_fea, h = a_spa.double(), a_fea.double(), h.double()
    xd = x.double()
    xs = snn.scipy_to_torch_csr(sp.csr_matrix(xd.numpy()), dtype=torch.float64)
    prop = mod.propagate_input(xs, a_spa, a_fea)
    assert prop is not None and all(p.layout == torch.strided for p in prop)
    torch.testing.assert_close(prop[0], torch.from_numpy(_dense(a_spa) @ xd.numpy()))

    def grads(**kw):
        mod.zero_grad()
        out = mod(xd, a_spa, a_fea, h, decode=False, **kw)
        total, _ = mod.loss(out, xd, edges, generator=torch.Generator().manual_seed(0))
        total.backward()
        return out.z.detach(), [p.grad.clone() for p in mod.parameters()]

    z1, g1 = grads()
    z2, g2 = grads(x_propagated=prop)
    torch.testing.assert_close(z1, z2)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"x_propagated\[1\]"):
        mod.encode(xd, a_spa, a_fea, h, x_propagated=(prop[0], prop[1][:5]))
    # wider panels than the hidden layer: no propagated copy (it would outgrow the network's own tensors)
    assert snn.SemSTModule(12, 9, hidden=8, latent=8).propagate_input(x, a_spa.float(), a_fea.float()) is None


def test_semst_module_config_roundtrip_and_errors():
    mod = snn.SemSTModule(12, None, hidden=16, latent=8, fusion="none", decoder="counts")
    clone = snn.SemSTModule.from_config(mod.config)
    assert clone.config == mod.config
    assert not mod.uses_llm
    with pytest.raises(ValueError, match="'fsm', 'concat'"):
        snn.SemSTModule(12, 4, fusion="film")
    with pytest.raises(ValueError, match="fusion='none'"):
        snn.SemSTModule(12, None, fusion="fsm")
    with pytest.raises(ValueError, match="'row', 'sym'"):
        snn.SemSTModule(12, 4, gcn_norm="left")
    x, a_spa, a_fea, h, _ = _module_inputs()
    with pytest.raises(ValueError, match="x"):
        snn.SemSTModule(13, 9)(x, a_spa, a_fea, h)


# -- mixed precision ----------------------------------------------------------------------------------------
def test_bfloat16_products_give_the_float32_loss_and_gradient_within_rounding():
    """Rounded operands, float32 accumulation: loss and gradients within bfloat16's ~3 significant digits."""
    torch.manual_seed(2)
    n, m, hid = 64, 50, 32
    dec = snn.ZINBDecoder(8, hid, m)
    x = torch.poisson(torch.rand(n, m) * 2) * 1.3
    target = snn.ZINBTarget(sp.csr_matrix(x.numpy()))
    h = torch.randn(n, hid, requires_grad=True)
    params = [h, dec.heads.weight, dec.heads.bias]
    full = dec.nll(h, target)
    g_full = torch.autograd.grad(full, params)
    for chunk in (7, None):
        mixed = dec.nll(h, target, chunk_rows=chunk, matmul_dtype=torch.bfloat16)
        assert mixed.dtype == torch.float32
        g_mixed = torch.autograd.grad(mixed, params)
        torch.testing.assert_close(mixed, full, rtol=2e-3, atol=0)
        for a, b in zip(g_full, g_mixed, strict=True):
            assert b.dtype == torch.float32
            assert ((a - b).norm() / a.norm()).item() < 2e-2
        assert not torch.equal(g_mixed[1], g_full[1])  # the products really ran in bfloat16


def test_semst_module_precision_option():
    torch.manual_seed(0)
    x, a_spa, a_fea, h, edges = _module_inputs()
    mod = snn.SemSTModule(12, 9, hidden=16, latent=8)
    mixed = snn.SemSTModule.from_config({**mod.config, "precision": "bfloat16"})
    mixed.load_state_dict(mod.state_dict())
    assert mod.config["precision"] == "float32" and mixed.config["precision"] == "bfloat16"
    o32, o16 = mod(x, a_spa, a_fea, h), mixed(x, a_spa, a_fea, h)
    assert o16.z.dtype == torch.float32
    assert ((o16.z - o32.z).norm() / o32.z.norm()).item() < 2e-2
    assert not torch.equal(o16.z, o32.z)
    l32, _ = mod.loss(o32, x, edges)
    l16, _ = mixed.loss(o16, x, edges)
    assert l16.item() == pytest.approx(l32.item(), rel=2e-2)
    l16.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in mixed.parameters())
    old = {k: v for k, v in mod.config.items() if k != "precision"}  # a checkpoint from before the option
    assert snn.SemSTModule.from_config(old).precision == "float32"
    with pytest.raises(ValueError, match="'float32', 'bfloat16'"):
        snn.SemSTModule(12, 9, precision="half")


def test_zinb_workspace_reuses_a_larger_buffer_and_alternating_blocks_match_fresh_buffers():
    """Row blocks of unequal size (1464 / 1465 rows in training) share one buffer; the loss is unchanged."""
    from semst_sc.nn._zinb import _Workspace

    ws = _Workspace()
    like = torch.zeros(1)
    big = ws.get("logits", (5, 6), like)
    small = ws.get("logits", (4, 6), like)
    assert small.data_ptr() == big.data_ptr() and small.shape == (4, 6) and small.is_contiguous()
    again = ws.get("logits", (6, 6), like)  # larger than held: a new buffer
    assert again.shape == (6, 6) and again.numel() == 36

    torch.manual_seed(0)
    dec = snn.ZINBDecoder(latent=4, hidden=8, n_genes=7)
    counts = torch.poisson(torch.full((9, 7), 1.5))
    h = torch.randn(9, 8)
    losses = []
    for rows in (slice(0, 4), slice(4, 9), slice(0, 4)):  # 4, 5, then 4 rows again
        target = snn.ZINBTarget(counts[rows])
        losses.append(dec.nll(h[rows], target).item())
        fresh = snn.ZINBDecoder(latent=4, hidden=8, n_genes=7)
        fresh.load_state_dict(dec.state_dict())
        assert losses[-1] == fresh.nll(h[rows], target).item()
    assert losses[0] == losses[2]
