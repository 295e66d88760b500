"""The two auxiliary losses of SemST: correlation reduction and spatial regularisation (both O(N))."""

from __future__ import annotations

import weakref

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from .._constants import SPATIAL_WEIGHTINGS
from ._graph import torch_csr

__all__ = ["SPATIAL_WEIGHTINGS", "correlation_reduction_loss", "spatial_regularization_loss"]


def correlation_reduction_loss(h1: torch.Tensor, h2: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    r"""Feature-level correlation reduction between two views (paper eqs. 11-12, as in the reference).

    Every column (feature) of ``h1`` and ``h2`` is L2-normalised over the spots (no centring), and
    :math:`C = \hat h_1^\top \hat h_2` (d x d) holds the cosine similarity of feature i of view 1 with
    feature j of view 2 (eq. 11). The loss is

    .. math:: \mathrm{mean}_i (C_{ii} - 1)^2 + \mathrm{mean}_{i \ne j} C_{ij}^2,

    i.e. diagonal and off-diagonal entries each averaged separately, as METHOD.md and the reference
    code do. (Eq. 12 of the paper writes one average over all d^2 entries, which weights the diagonal
    d - 1 times less.) It is 0 exactly when C is the identity. Memory is O(N d + d^2).

    Parameters
    ----------
    h1, h2
        (N x d) embeddings of the two views (``H_spa``, ``H_fea``).
    eps
        Lower bound on column norms (an all-zero column then has cosine 0 with everything).

    Returns
    -------
    torch.Tensor
        The scalar loss.
    """
    if h1.ndim != 2 or h1.shape != h2.shape:
        raise ValueError(
            f"h1 and h2 must be 2-D with equal shapes, got {tuple(h1.shape)} and {tuple(h2.shape)}."
        )
    d = h1.shape[1]
    # C = diag(1/|h1_i|) (h1^T h2) diag(1/|h2_j|): the d x d product scaled by the column norms, the same
    # cosines as normalising the N x d columns first, without two normalised N x d copies and their backward
    n1 = torch.linalg.vector_norm(h1, dim=0).clamp_min(eps)
    n2 = torch.linalg.vector_norm(h2, dim=0).clamp_min(eps)
    c = (h1.t() @ h2) / (n1[:, None] * n2[None, :])
    diag = torch.diagonal(c)
    on = (diag - 1.0).square().mean()
    if d == 1:
        return on
    off = (c.square().sum() - diag.square().sum()) / (d * (d - 1))
    return on + off


def _offsets(rows: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row offsets (``n + 1``) of entries whose row indices ``rows`` are sorted."""
    crow = torch.zeros(n + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return crow


def _transpose(
    rows: torch.Tensor, cols: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The transpose of a CSR layout whose entries are sorted by row: ``(perm_t, col_t, crow_t)``.

    ``perm_t`` is the position, in the row-sorted list, of the k-th entry in column order (a stable sort,
    so each column's rows stay ascending), ``col_t`` the row index of that entry and ``crow_t`` the
    column offsets.
    """
    perm_t = torch.argsort(cols, stable=True)
    return perm_t, rows[perm_t], _offsets(cols, n)


class _EdgeStructure:
    """CSR layout of an edge list (and of its transpose), for sampled dot products and their gradient."""

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, n: int) -> None:
        rows = rows.reshape(-1).to(torch.int64)
        cols = cols.reshape(-1).to(torch.int64)
        self.n = n
        self.n_edges = int(rows.numel())
        key = rows * n + cols
        order = torch.argsort(key)
        self.rows, self.cols = rows[order], cols[order]
        self.keys = key[order]  # sorted: membership tests for negative sampling
        self.crow = _offsets(self.rows, n)
        self.perm_t, self.col_t, self.crow_t = _transpose(self.rows, self.cols, n)
        self.n_self = int((rows == cols).sum())

    def contains(self, key: torch.Tensor) -> torch.Tensor:
        if self.n_edges == 0:
            return torch.zeros_like(key, dtype=torch.bool)
        pos = torch.searchsorted(self.keys, key).clamp_(max=self.n_edges - 1)
        return self.keys[pos] == key


_STRUCTS: dict[tuple[int, int, int, str], tuple[weakref.ref, weakref.ref, _EdgeStructure]] = {}


def _edge_structure(rows: torch.Tensor, cols: torch.Tensor, n: int, device: torch.device) -> _EdgeStructure:
    """Build (once per edge tensors, size and device) the CSR layout of the edges."""
    key = (id(rows), id(cols), n, str(device))
    hit = _STRUCTS.get(key)
    if hit is not None and hit[0]() is rows and hit[1]() is cols:
        return hit[2]
    if rows.shape != cols.shape or rows.ndim != 1:
        raise ValueError(
            f"`rows` and `cols` must be 1-D of equal length, got {tuple(rows.shape)}, {tuple(cols.shape)}."
        )
    if rows.numel() and (
        int(rows.min()) < 0 or int(cols.min()) < 0 or max(int(rows.max()), int(cols.max())) >= n
    ):
        raise ValueError(f"edge indices must lie in [0, {n}) (the number of rows of `z`).")
    struct = _EdgeStructure(rows.to(device), cols.to(device), n)
    _STRUCTS[key] = (weakref.ref(rows), weakref.ref(cols), struct)
    weakref.finalize(rows, _STRUCTS.pop, key, None)
    return struct


class _EdgeDot(torch.autograd.Function):
    """``<zn[r], zn[c]>`` for every edge, as a sampled dense-dense product (SDDMM): O(E d), no gather."""

    @staticmethod
    def forward(ctx, zn: torch.Tensor, s: _EdgeStructure | _SampledPairs) -> torch.Tensor:
        mask = torch_csr(s.crow, s.cols, zn.new_zeros(s.n_edges), (s.n, s.n))
        vals = torch.sparse.sampled_addmm(mask, zn, zn.t(), beta=0.0, alpha=1.0).values()
        ctx.save_for_backward(zn)
        ctx.s = s
        return vals

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (zn,) = ctx.saved_tensors
        s = ctx.s
        grad = grad.contiguous()
        a = torch_csr(s.crow, s.cols, grad, (s.n, s.n))  # d/dzn_r += g zn_c
        at = torch_csr(s.crow_t, s.col_t, grad[s.perm_t], (s.n, s.n))  # d/dzn_c += g zn_r
        return a @ zn + at @ zn, None


class _SampledPairs:
    """CSR layout of the negative pairs drawn in one call, in the form :class:`_EdgeDot` reads.

    The pairs come as ``k`` rounds of one partner per spot (pair ``r * n + i`` joins spot ``i`` to
    ``cols[r * n + i]``), some dropped by ``keep``. Read column-wise, the rounds are already grouped by
    spot, so the rows need no sort. On the CPU each spot's partners stay in round order (torch's CPU
    kernels of the sampled product and of the sparse-dense products read a row in any order); elsewhere
    they are sorted, as cuSPARSE assumes. The transpose, for the gradient of the partners, takes one
    stable sort. The layout is rebuilt at every call, as the pairs are redrawn; it costs O(n k) time and
    memory. ``sort_within_rows`` (None: on devices other than the CPU) sorts each spot's partners; the
    sums the loss takes over the pairs do not depend on their order.
    """

    def __init__(
        self, cols: torch.Tensor, keep: torch.Tensor, n: int, k: int, sort_within_rows: bool | None = None
    ) -> None:
        keep_t = keep.view(k, n).t().reshape(-1)
        self.n = n
        self.cols = cols.view(k, n).t().reshape(-1)[keep_t]
        self.n_edges = int(self.cols.numel())
        rows = torch.repeat_interleave(torch.arange(n, device=cols.device), keep_t.view(n, k).sum(1))
        if cols.device.type != "cpu" if sort_within_rows is None else sort_within_rows:
            self.cols = self.cols[torch.argsort(rows * n + self.cols)]
        self.crow = _offsets(rows, n)
        self.perm_t, self.col_t, self.crow_t = _transpose(rows, self.cols, n)


def _negative_dots(zn: torch.Tensor, pairs: _SampledPairs) -> torch.Tensor:
    """``<zn[i], zn[j]>`` for the sampled pairs: the sampled product, or gathers where it cannot run.

    torch's sampled product refuses a layout with more entries than the dense matrix has (``n_edges >
    n * n``, only when far more partners than spots are drawn, as in a test of the estimate); gathering
    the rows gives the same values there.
    """
    if pairs.n_edges <= pairs.n * pairs.n:
        return _EdgeDot.apply(zn, pairs)
    rows = torch.repeat_interleave(torch.arange(pairs.n, device=zn.device), pairs.crow.diff())
    return (zn.index_select(0, rows) * zn.index_select(0, pairs.cols)).sum(1)


def _exact_negative_sum(zn: torch.Tensor, s: _EdgeStructure, pos_psi: torch.Tensor) -> torch.Tensor:
    """Sum of softplus(psi_ik) over all ordered pairs i != k that are not edges, in row blocks.

    O(N^2 d) time; memory O(block x N) thanks to checkpointing (each block is recomputed in backward).
    """
    n = zn.shape[0]
    block = max(1, (1 << 22) // max(n, 1))

    def block_sum(zb: torch.Tensor, zall: torch.Tensor) -> torch.Tensor:
        return F.softplus(zb @ zall.t()).sum()

    total = zn.new_zeros(())
    for b0 in range(0, n, block):
        zb = zn[b0 : b0 + block]
        total = total + checkpoint(block_sum, zb, zn, use_reentrant=False)
    self_psi = (zn * zn).sum(1)  # the diagonal (cosine of a spot with itself)
    not_self = s.rows != s.cols
    return total - F.softplus(self_psi).sum() - F.softplus(pos_psi[not_self]).sum()


def spatial_regularization_loss(
    z: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    n_negatives: int | None = 10,
    generator: torch.Generator | None = None,
    *,
    weighting: str = "reference",
) -> torch.Tensor:
    r"""Spatial regularisation (paper eq. 13): neighbours close, non-neighbours apart, in O(N + E).

    With :math:`\psi_{ij}` the cosine similarity of :math:`z_i` and :math:`z_j`, positives are the given
    spatial edges (term :math:`-\log\sigma(\psi_{ij}) = \mathrm{softplus}(-\psi_{ij})`, summed exactly
    over all E edges with a sampled dense-dense product) and negatives the non-neighbour pairs (term
    :math:`-\log(1-\sigma(\psi_{ik})) = \mathrm{softplus}(\psi_{ik})`).

    **Why sampled negatives.** The negative sum runs over ~N^2 pairs. Sums of *linear* (or polynomial)
    functions of :math:`\psi` factor through :math:`Z^\top Z`-style identities
    (e.g. :math:`\sum_k \psi_{ik} = \hat z_i \cdot \sum_k \hat z_k`), but :math:`\log(1-\sigma(\psi))` is
    not polynomial, so the all-pairs sum does not factor: it can only be evaluated pair by pair, which is
    O(N^2) time (and, done naively, O(N^2) memory, as in the reference code). We therefore estimate the
    mean over non-neighbour pairs from ``n_negatives`` random partners per spot (each spot i draws k
    uniformly; pairs with k = i or k a neighbour of i are discarded), an unbiased-in-expectation,
    O(N * n_negatives * d) estimate, redrawn every call (every epoch). ``n_negatives=None`` computes
    the exact sum instead, in row blocks with recomputation (O(N^2 d) time, O(block x N) memory): for
    small data and for checking the estimate.

    **Scale.** Eq. 13 is a sum over all pairs. The reference code averages the two masked terms over the
    N x N matrix and halves the result, i.e. it minimises eq. 13 / (2 N^2). ``weighting="reference"``
    estimates exactly that:

    .. math:: \frac{1}{2N^2}\Big(\sum_{(i,j)\in E} \mathrm{softplus}(-\psi_{ij})
              + P_{neg}\,\overline{\mathrm{softplus}(\psi)}_{neg}\Big),

    with :math:`P_{neg} = N(N-1) - E` the number of non-neighbour ordered pairs (the reference also adds a
    constant :math:`N\log 2 / (2N^2)` from the diagonal, which has no gradient and is left out). Under this
    weighting the positive term carries weight ~E / N^2 (about 2 % on a Visium slice, less as N grows).
    ``weighting="balanced"`` instead averages the two means with equal weight,
    :math:`\tfrac12(\overline{\cdot}_{pos} + \overline{\cdot}_{neg})`, independent of N.

    Parameters
    ----------
    z
        Embedding (N x d).
    rows, cols
        Spatial edges (int64, length E), e.g. from :func:`~semst_sc.nn.edge_index`; the pair
        ``(rows[e], cols[e])`` is a neighbour pair. Give both directions for a symmetric graph.
    n_negatives
        Random partners per spot (default 10), or None for the exact sum over all non-neighbour pairs.
    generator
        A CPU :class:`torch.Generator` for the negative draws (seed it for reproducibility).
    weighting
        ``"reference"`` or ``"balanced"`` (see Scale).

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    if weighting not in SPATIAL_WEIGHTINGS:
        raise ValueError(
            f"Unknown `weighting` {weighting!r}; valid choices: {', '.join(map(repr, SPATIAL_WEIGHTINGS))}."
        )
    if z.ndim != 2:
        raise ValueError(f"`z` must be 2-D (N x d), got shape {tuple(z.shape)}.")
    if n_negatives is not None and int(n_negatives) < 1:
        raise ValueError(f"`n_negatives` must be a positive integer or None, got {n_negatives}.")
    n = z.shape[0]
    s = _edge_structure(rows, cols, n, z.device)
    zn = F.normalize(z, dim=1)
    zero = z.new_zeros(())
    if s.n_edges:
        pos_psi = _EdgeDot.apply(zn, s)
        pos_sum = F.softplus(-pos_psi).sum()
    else:
        pos_psi, pos_sum = z.new_zeros(0), zero
    n_pos_pairs = s.n_edges - s.n_self
    n_neg_pairs = n * (n - 1) - n_pos_pairs
    if n_neg_pairs <= 0:
        neg_mean = zero
    elif n_negatives is None:
        neg_mean = _exact_negative_sum(zn, s, pos_psi) / n_neg_pairs
    else:
        k = int(n_negatives)
        i = torch.arange(n, dtype=torch.int64).repeat(k)
        j = torch.randint(0, n, (n * k,), generator=generator, dtype=torch.int64)
        i, j = i.to(z.device), j.to(z.device)
        keep = (i != j) & ~s.contains(i * n + j)
        pairs = _SampledPairs(j, keep, n, k)
        if not pairs.n_edges:
            neg_mean = zero
        else:
            neg_mean = F.softplus(_negative_dots(zn, pairs)).mean()
    if weighting == "reference":
        return (pos_sum + n_neg_pairs * neg_mean) / (2.0 * n * n)
    pos_mean = pos_sum / s.n_edges if s.n_edges else zero
    return 0.5 * (pos_mean + neg_mean)
