"""Adjacency matrices (scipy) to normalised torch sparse tensors, and edge lists for the losses."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from .._constants import GCN_NORMS

__all__ = ["edge_index", "normalize_adjacency", "scipy_to_torch_csr", "torch_csr"]


def _check_square_sparse(adj, name: str = "adj") -> sp.csr_matrix:
    if not sp.issparse(adj):
        raise TypeError(
            f"`{name}` must be a scipy.sparse matrix (N x N), got {type(adj).__name__}; "
            "wrap a dense array with scipy.sparse.csr_matrix(...) first (never densify an N x N graph)."
        )
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"`{name}` must be square (N x N), got shape {adj.shape}.")
    return sp.csr_matrix(adj)


def _binarize(adj: sp.csr_matrix, *, keep_diagonal: bool) -> sp.csr_matrix:
    """0/1 copy of ``adj`` (explicit zeros dropped), with or without its diagonal."""
    a = adj.copy()
    a.eliminate_zeros()
    a.data = np.ones_like(a.data, dtype=np.float64)
    if not keep_diagonal:
        a = (a - sp.diags(a.diagonal(), format="csr")).tocsr()
        a.eliminate_zeros()
    a.sort_indices()
    return a


def torch_csr(
    crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """A torch sparse CSR tensor from valid CSR arrays (no invariant check, no "beta" warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def scipy_to_torch_csr(mat, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert any scipy sparse matrix to a torch sparse CSR tensor (indices int64, values ``dtype``).

    Parameters
    ----------
    mat
        A scipy sparse matrix (any format).
    dtype
        Dtype of the values.

    Returns
    -------
    torch.Tensor
        The same matrix as a torch sparse CSR tensor, indices sorted.
    """
    m = sp.csr_matrix(mat)
    m.sort_indices()
    return torch_csr(
        torch.from_numpy(m.indptr.astype(np.int64)),
        torch.from_numpy(m.indices.astype(np.int64)),
        torch.from_numpy(np.asarray(m.data)).to(dtype),
        (int(m.shape[0]), int(m.shape[1])),
    )


def normalize_adjacency(
    adj,
    norm: str = "row",
    add_self_loops: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    r"""Normalise a graph for GCN propagation and return it as a torch sparse CSR tensor.

    The matrix is first **binarised**: every stored non-zero becomes 1 (weights and distances are
    dropped, explicit zeros removed), because SemST's graphs are 0/1 (METHOD.md 1.2). The diagonal is
    then replaced by ones when ``add_self_loops`` (so an existing self-loop is not counted twice), giving
    :math:`\tilde A = A + I`, and :math:`\tilde D = \mathrm{diag}(\tilde A \mathbf 1)`:

    - ``norm="row"``: :math:`\tilde D^{-1} \tilde A` (the reference implementation; rows sum to 1);
    - ``norm="sym"``: :math:`\tilde D^{-1/2} \tilde A \tilde D^{-1/2}` (Kipf & Welling; paper eq. 3).

    The graph is assumed symmetric (both semst graph builders make it so); nothing is symmetrised here.
    For a non-symmetric input ``"row"`` still gives a row-stochastic matrix and ``"sym"`` uses the row
    degrees. Rows without any edge (possible only with ``add_self_loops=False``) stay zero.

    Parameters
    ----------
    adj
        Square scipy sparse matrix (N x N). It is not modified.
    norm
        ``"row"`` or ``"sym"``.
    add_self_loops
        Put ones on the diagonal before normalising.
    dtype
        Floating dtype of the returned values.

    Returns
    -------
    torch.Tensor
        Sparse CSR tensor of shape (N, N) with sorted column indices, on the CPU.
    """
    if norm not in GCN_NORMS:
        raise ValueError(f"Unknown `norm` {norm!r}; valid choices: {', '.join(map(repr, GCN_NORMS))}.")
    a = _binarize(_check_square_sparse(adj), keep_diagonal=not add_self_loops)
    if add_self_loops:
        a = (a + sp.identity(a.shape[0], dtype=np.float64, format="csr")).tocsr()
    deg = np.asarray(a.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        if norm == "row":
            inv = np.where(deg > 0, 1.0 / deg, 0.0)
            a = sp.diags(inv) @ a
        else:
            inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(deg), 0.0)
            a = sp.diags(inv_sqrt) @ a @ sp.diags(inv_sqrt)
    return scipy_to_torch_csr(a, dtype=dtype)


def edge_index(adj, *, self_loops: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the non-zeros of a (binarised) adjacency, as int64 tensors.

    Parameters
    ----------
    adj
        Square scipy sparse matrix (N x N).
    self_loops
        Keep diagonal entries. The default drops them: a spot's cosine similarity with itself is
        always 1 and carries no gradient, so the spatial loss ignores it.

    Returns
    -------
    tuple of torch.Tensor
        ``(rows, cols)``, each of length E, sorted by row then column (CSR order).
    """
    a = _binarize(_check_square_sparse(adj), keep_diagonal=self_loops).tocoo()
    return torch.from_numpy(a.row.astype(np.int64)), torch.from_numpy(a.col.astype(np.int64))
