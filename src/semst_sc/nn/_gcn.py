"""Graph convolution with ``torch.sparse``: one layer, and the two-layer encoder of each SemST branch."""

from __future__ import annotations

import math
import weakref

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from ._graph import torch_csr

__all__ = ["GCN", "GCNLayer", "feature_matmul"]

# Transposes of sparse feature matrices, computed once per tensor (the backward of X @ W needs X^T).
# Keyed by id(X) with a weak reference to X: the entry is dropped when X is garbage collected.
_TRANSPOSES: dict[int, tuple[weakref.ref, torch.Tensor]] = {}


def _is_sparse_csr(x: torch.Tensor) -> bool:
    return x.layout == torch.sparse_csr


def _csr_transpose(x: torch.Tensor) -> torch.Tensor:
    """X^T as a CSR tensor, cached per X (weakly: the cache entry dies with X)."""
    hit = _TRANSPOSES.get(id(x))
    if hit is not None and hit[0]() is x:
        return hit[1]
    if x.device.type == "cpu":
        # scipy transposes a CSR matrix ~10x faster than torch's sparse layout conversion on CPU
        m = sp.csr_matrix(
            (x.values().numpy(), x.col_indices().numpy(), x.crow_indices().numpy()), shape=tuple(x.shape)
        )
        mt = m.T.tocsr()
        mt.sort_indices()
        xt = torch_csr(
            torch.from_numpy(mt.indptr.astype(np.int64)),
            torch.from_numpy(mt.indices.astype(np.int64)),
            torch.from_numpy(mt.data),
            (int(mt.shape[0]), int(mt.shape[1])),
        )
    else:
        xt = x.t().to_sparse_csr()
    _TRANSPOSES[id(x)] = (weakref.ref(x), xt)
    weakref.finalize(x, _TRANSPOSES.pop, id(x), None)
    return xt


class _ConstSparseMatmul(torch.autograd.Function):
    """``X @ W`` for a constant sparse CSR ``X``; backward gives ``dW = X^T @ dY`` with a cached X^T.

    Used for the sparse expression matrix and for the normalised adjacencies. torch's own backward of a
    CSR @ dense product re-sorts the matrix into its transpose on every call; here the transpose is built
    once. No gradient flows into ``X`` (data or graph, not a parameter).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.x = x
        return x @ weight

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = _csr_transpose(ctx.x) @ grad_out.contiguous()
        return None, grad_w


def feature_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight`` where ``x`` is dense or a sparse CSR tensor (gradients reach ``weight`` in both cases).

    For a sparse ``x`` no gradient flows back into ``x``: use a dense ``x`` if you need one.

    Parameters
    ----------
    x
        Node features, N x in_features, dense or sparse CSR.
    weight
        Weight matrix, in_features x out_features.

    Returns
    -------
    torch.Tensor
        The dense product, N x out_features.
    """
    if _is_sparse_csr(x):
        if x.requires_grad:
            raise ValueError(
                "feature_matmul does not propagate gradients into a sparse `x`; pass a dense tensor instead."
            )
        return _ConstSparseMatmul.apply(x, weight)
    if x.is_sparse:
        raise TypeError("Sparse `x` must use the CSR layout: convert with `x.to_sparse_csr()`.")
    return x @ weight


def _propagate(adj: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    if adj.layout == torch.strided:
        return adj @ support
    if adj.layout != torch.sparse_csr:
        adj = adj.to_sparse_csr()
    if adj.requires_grad:
        return adj @ support
    return _ConstSparseMatmul.apply(adj, support)


class GCNLayer(nn.Module):
    r"""One graph convolution, ``adj @ (x @ W) + b`` (no activation).

    ``adj`` is an already normalised (N x N) adjacency, a sparse CSR tensor as made by
    :func:`~semst_sc.nn.normalize_adjacency` (a COO tensor is converted). ``x`` is dense (N x F) or a sparse
    CSR tensor: on a mostly-zero expression matrix the sparse product ``x @ W`` can be cheaper, and the
    gradient with respect to ``W`` is the same either way.

    Parameters
    ----------
    in_features, out_features
        Widths of the input and output.
    bias
        Add a learnable bias after propagation.

    Notes
    -----
    Weights are Glorot-uniform, the bias starts at zero (Kipf & Welling 2017).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = nn.Parameter(torch.empty(self.in_features, self.out_features))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights, zero bias."""
        bound = math.sqrt(6.0 / (self.in_features + self.out_features))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The feature transform ``x @ W`` alone."""
        return feature_matmul(x, self.weight)

    def propagate(self, support: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """The graph step ``adj @ support + b`` alone (``support`` = ``x @ W``)."""
        out = _propagate(adj, support)
        if self.bias is not None:
            out = out.add_(self.bias)  # in place on the fresh product (its backward does not read it)
        return out

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """``adj @ (x @ W) + b``."""
        return self.propagate(self.transform(x), adj)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


class GCN(nn.Module):
    """Two graph convolutions: ``layer1 -> ReLU -> dropout -> layer2`` (M -> hidden -> out).

    Parameters
    ----------
    in_features
        Input width (genes).
    hidden
        Width of the first layer.
    out_features
        Output width (d).
    dropout
        Dropout probability between the layers.
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout}.")
        self.layer1 = GCNLayer(in_features, hidden)
        self.layer2 = GCNLayer(hidden, out_features)
        self.dropout = float(dropout)

    def forward_from_support(self, support: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Run the GCN from a precomputed first-layer support ``x @ layer1.weight``.

        Lets a caller compute ``x @ [W_a | W_b]`` once for two GCNs that read the same ``x``.
        """
        return self._after_layer1(self.layer1.propagate(support, adj), adj)

    def _after_layer1(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """ReLU (in place: ``h`` is a fresh tensor, one less copy), dropout, second layer."""
        h = F.dropout(F.relu(h, inplace=True), self.dropout, training=self.training)
        return self.layer2(h, adj)

    def forward_from_propagated(self, ax: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Run the GCN from the propagated input ``ax = adj @ x`` (dense, N x in), computed once by the caller.

        ``(adj @ x) @ W`` is the first layer's ``adj @ (x @ W)`` with the products in the other order: the same
        function (floating-point sums in another order), without a sparse product per forward and backward.
        A bfloat16 ``ax`` makes the product run in bfloat16 with float32 output.
        """
        w = self.layer1.weight
        if ax.dtype != w.dtype:
            support = (ax @ w.to(ax.dtype)).float()
        else:
            support = ax @ w
        if self.layer1.bias is not None:
            support = support.add_(self.layer1.bias)
        return self._after_layer1(support, adj)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """(N x in) features and an (N x N) normalised adjacency -> (N x out)."""
        return self.forward_from_support(self.layer1.transform(x), adj)
