"""A STAGATE-style graph-attention autoencoder, with an optional :class:`~semst_sc.nn.FSM` on its latent space.

Used to test the paper's plug-and-play claim (Table 3): the FSM module, unchanged, added to another encoder.
Everything runs on an edge list: attention scores are one number per edge, the softmax over each spot's
neighbours and the weighted sum of their features are scatter / sparse operations, so memory is
O(E + N * width), never N x N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from ._fusion import FSM
from ._graph import _check_square_sparse, edge_index, torch_csr

__all__ = ["AttentionGraph", "GATAutoencoder", "GATOutput", "edge_aggregate", "edge_softmax"]

#: elements of the (edges x features) temporaries built per chunk by :func:`_edge_dots_chunked`
_CHUNK_ELEMENTS = 1 << 22


def _csr_pointers(rows: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """CSR row pointers (length N + 1) of an edge list sorted by ``rows``."""
    counts = torch.bincount(rows, minlength=n_nodes)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


@dataclass(frozen=True)
class AttentionGraph:
    """A directed edge list ``src -> dst`` in CSR order (sorted by ``dst``, then ``src``), ready for attention.

    Edge ``e`` carries a message from spot ``src[e]`` to spot ``dst[e]``; the softmax of an attention layer
    runs over the edges that enter each spot. The transposed order (by ``src``) is precomputed once for the
    backward pass. Build it with :meth:`from_adjacency` (a scipy matrix) or :meth:`from_edges`.

    Attributes
    ----------
    dst, src
        int64 tensors of length E.
    n_nodes
        Number of spots N.
    crow
        CSR row pointers over ``dst`` (length N + 1).
    perm_t
        Permutation of the edges that sorts them by ``src`` then ``dst``.
    crow_t
        CSR row pointers of the transposed graph (over ``src``).
    """

    dst: torch.Tensor
    src: torch.Tensor
    n_nodes: int
    crow: torch.Tensor
    perm_t: torch.Tensor
    crow_t: torch.Tensor

    @classmethod
    def from_edges(cls, dst: torch.Tensor, src: torch.Tensor, n_nodes: int) -> AttentionGraph:
        """Build from two index tensors (any order; duplicates are kept as separate edges).

        Parameters
        ----------
        dst, src
            Integer tensors of equal length E with values in ``[0, n_nodes)``.
        n_nodes
            Number of spots.
        """
        dst = torch.as_tensor(dst)
        src = torch.as_tensor(src)
        n_nodes = int(n_nodes)
        if dst.dtype.is_floating_point or src.dtype.is_floating_point or dst.dtype == torch.bool:
            raise TypeError("`dst` and `src` must be integer tensors of node indices.")
        if dst.ndim != 1 or src.shape != dst.shape:
            raise ValueError(
                f"`dst` and `src` must be 1-D and of equal length, got {tuple(dst.shape)} and "
                f"{tuple(src.shape)}."
            )
        if n_nodes < 1:
            raise ValueError(f"`n_nodes` must be a positive integer, got {n_nodes}.")
        dst, src = dst.long().cpu(), src.long().cpu()
        lo = min(int(dst.min()), int(src.min())) if dst.numel() else 0
        hi = max(int(dst.max()), int(src.max())) if dst.numel() else 0
        if lo < 0 or hi >= n_nodes:
            raise ValueError(f"edge indices must lie in [0, {n_nodes}).")
        order = torch.argsort(dst * n_nodes + src, stable=True)
        dst, src = dst[order].contiguous(), src[order].contiguous()
        perm_t = torch.argsort(src * n_nodes + dst, stable=True)
        return cls(
            dst, src, n_nodes, _csr_pointers(dst, n_nodes), perm_t, _csr_pointers(src[perm_t], n_nodes)
        )

    @classmethod
    def from_adjacency(cls, adj, *, self_loops: bool = True) -> AttentionGraph:
        """Build from a square scipy sparse adjacency (binarised; row = receiving spot, column = sender).

        Parameters
        ----------
        adj
            N x N scipy sparse matrix (e.g. ``obsp['spatial_connectivities']``). Not modified.
        self_loops
            Give every spot an edge to itself (STAGATE does: a spot attends to itself and its neighbours).
            When False, existing diagonal entries are dropped.
        """
        a = _check_square_sparse(adj)
        n = int(a.shape[0])
        if self_loops:
            a = (a + sp.identity(n, dtype=np.float64, format="csr")).tocsr()
        rows, cols = edge_index(a, self_loops=self_loops)
        return cls.from_edges(rows, cols, n)

    @property
    def n_edges(self) -> int:
        return int(self.dst.numel())

    def to(self, device: torch.device | str) -> AttentionGraph:
        """The same graph with its tensors on ``device``."""
        return AttentionGraph(
            self.dst.to(device),
            self.src.to(device),
            self.n_nodes,
            self.crow.to(device),
            self.perm_t.to(device),
            self.crow_t.to(device),
        )


def edge_softmax(logits: torch.Tensor, dst: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Softmax of per-edge scores over the edges that enter each node, in O(E) memory.

    ``out[e] = exp(logits[e]) / sum_{e': dst[e'] = dst[e]} exp(logits[e'])``. The per-node maximum is
    subtracted first (``scatter_reduce`` with ``amax``) for numerical safety; it is detached, which leaves
    the gradient exact because a softmax does not change when a constant is subtracted from a group.

    Parameters
    ----------
    logits
        Scores, shape (E,).
    dst
        Receiving node of every edge, int64, shape (E,).
    n_nodes
        Number of nodes N.

    Returns
    -------
    torch.Tensor
        Weights of shape (E,), summing to 1 over the incoming edges of every node that has any.
    """
    if logits.ndim != 1 or dst.shape != logits.shape:
        raise ValueError(
            f"`logits` and `dst` must be 1-D of equal length, got {tuple(logits.shape)} and {tuple(dst.shape)}."
        )
    peak = torch.full((int(n_nodes),), -torch.inf, dtype=logits.dtype, device=logits.device)
    peak = peak.scatter_reduce(0, dst, logits.detach(), reduce="amax", include_self=True)
    ex = torch.exp(logits - peak[dst])
    denom = torch.zeros(int(n_nodes), dtype=logits.dtype, device=logits.device).index_add(0, dst, ex)
    return ex / denom[dst]


def _edge_dots_chunked(a: torch.Tensor, b: torch.Tensor, graph: AttentionGraph) -> torch.Tensor:
    """``out[e] = <a[dst[e]], b[src[e]]>`` by gathering rows over chunks of edges (bounded temporaries)."""
    out = torch.empty(graph.n_edges, dtype=a.dtype, device=a.device)
    step = max(1, _CHUNK_ELEMENTS // max(1, a.shape[1]))
    for lo in range(0, graph.n_edges, step):
        hi = min(lo + step, graph.n_edges)
        out[lo:hi] = (a[graph.dst[lo:hi]] * b[graph.src[lo:hi]]).sum(dim=1)
    return out


def _edge_dots(a: torch.Tensor, b: torch.Tensor, graph: AttentionGraph) -> torch.Tensor:
    """``out[e] = <a[dst[e]], b[src[e]]>`` for every edge: ``a @ b^T`` sampled on the graph's pattern.

    Uses torch's sampled dense-dense product (no temporary beyond the E outputs); where the device has no
    kernel for it, falls back to :func:`_edge_dots_chunked`.
    """
    n = graph.n_nodes
    pattern = torch_csr(
        graph.crow, graph.src, torch.zeros(graph.n_edges, dtype=a.dtype, device=a.device), (n, n)
    )
    try:
        return torch.sparse.sampled_addmm(pattern, a, b.t(), beta=0.0).values()
    except (RuntimeError, NotImplementedError):  # pragma: no cover - devices without the kernel
        return _edge_dots_chunked(a, b, graph)


class _EdgeAggregate(torch.autograd.Function):
    """``out[i] = sum_{e: dst[e] = i} w[e] * h[src[e]]`` through CSR products, with gradients for ``w`` and ``h``.

    Forward: the weighted adjacency as a sparse CSR tensor times ``h``. Backward: ``dh = A^T @ dout`` (the
    transposed CSR is laid out from the precomputed permutation) and ``dw[e] = <dout[dst[e]], h[src[e]]>``
    (:func:`_edge_dots`). Memory O(E + N * F).
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, h: torch.Tensor, graph: AttentionGraph) -> torch.Tensor:
        n = graph.n_nodes
        a = torch_csr(graph.crow, graph.src, w.contiguous(), (n, n))
        ctx.save_for_backward(w, h)
        ctx.graph = graph
        return a @ h

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        w, h = ctx.saved_tensors
        g: AttentionGraph = ctx.graph
        grad_out = grad_out.contiguous()
        grad_w = grad_h = None
        if ctx.needs_input_grad[0]:
            grad_w = _edge_dots(grad_out, h, g)
        if ctx.needs_input_grad[1]:
            n = g.n_nodes
            at = torch_csr(g.crow_t, g.dst[g.perm_t], w[g.perm_t].contiguous(), (n, n))
            grad_h = at @ grad_out
        return grad_w, grad_h, None


def edge_aggregate(weights: torch.Tensor, h: torch.Tensor, graph: AttentionGraph) -> torch.Tensor:
    """Weighted sum of neighbour features: ``out[i] = sum_{e: dst[e] = i} weights[e] * h[src[e]]``.

    Memory is O(E + N * F): the weights form a sparse matrix, never a dense N x N one. Gradients reach
    both ``weights`` and ``h``.

    Parameters
    ----------
    weights
        Per-edge weights, shape (E,), in the order of ``graph`` (sorted by ``dst``).
    h
        Node features, shape (N, F).
    graph
        The :class:`AttentionGraph`.

    Returns
    -------
    torch.Tensor
        Shape (N, F).
    """
    if weights.shape != (graph.n_edges,):
        raise ValueError(f"`weights` must have shape ({graph.n_edges},), got {tuple(weights.shape)}.")
    if h.ndim != 2 or h.shape[0] != graph.n_nodes:
        raise ValueError(f"`h` must have shape ({graph.n_nodes}, F), got {tuple(h.shape)}.")
    return _EdgeAggregate.apply(weights, h.contiguous(), graph)


@dataclass
class GATOutput:
    """What :class:`GATAutoencoder` returns.

    Attributes
    ----------
    z
        The embedding (N x latent): the encoder output, modulated by the FSM when the model has one.
    recon
        Reconstruction of the input (N x n_genes).
    attention
        Attention weight of every edge (E,), shared by the encoder and the decoder.
    """

    z: torch.Tensor
    recon: torch.Tensor
    attention: torch.Tensor


class GATAutoencoder(nn.Module):
    r"""STAGATE-style graph-attention autoencoder, optionally with SemST's FSM on its latent space.

    Encoder (no bias anywhere, as STAGATE):

    - ``h1 = ELU(sum_j att_ij (x_j W1))`` with ``W1: n_genes x hidden`` and one attention head;
    - ``z = h1 W2`` with ``W2: hidden x latent`` (no propagation in this layer, as STAGATE).

    Attention: with ``u = x W1``, every edge ``j -> i`` (self-loops included) gets the score
    ``sigmoid(a_dst . u_i + a_src . u_j)``, and the scores are turned into weights by a softmax over the
    edges entering ``i`` (:func:`edge_softmax`). Scores, weights and messages live on the edge list.

    FSM (optional): when ``llm_dim`` is given, ``z <- FSM(z, h_llm)``, the module
    :class:`semst_sc.nn.FSM` used unchanged (``FSM(latent, llm_dim)``); the modulated ``z`` is decoded and
    returned as the embedding.

    Decoder, tied to the encoder: ``h3 = ELU(sum_j att_ij (z_j W2^T))`` with the encoder's attention
    weights, and ``x_hat = h3 W1^T``. The loss is the mean squared error between ``x`` and ``x_hat``
    (:meth:`loss`).

    Parameters
    ----------
    n_genes
        Input width.
    llm_dim
        Width of the semantic embedding; ``None`` builds the model without FSM.
    hidden
        Width of the attention layer (STAGATE: 512).
    latent
        Width of the embedding (STAGATE: 30).

    Notes
    -----
    Weights and attention vectors are Xavier-normal with gain sqrt(2), as in STAGATE. Written from the
    STAGATE paper (Dong & Zhang 2022, Nature Communications); the decoder's weights are the transposes of
    the encoder's, so gradients from both halves reach the same parameters.
    """

    def __init__(self, n_genes: int, llm_dim: int | None = None, hidden: int = 512, latent: int = 30) -> None:
        super().__init__()
        for name, v in (("n_genes", n_genes), ("hidden", hidden), ("latent", latent)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or int(v) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}.")
        if llm_dim is not None and (
            isinstance(llm_dim, bool) or not isinstance(llm_dim, int | np.integer) or int(llm_dim) < 1
        ):
            raise ValueError(f"`llm_dim` must be None or a positive integer, got {llm_dim!r}.")
        self.n_genes, self.hidden, self.latent = int(n_genes), int(hidden), int(latent)
        self.llm_dim = None if llm_dim is None else int(llm_dim)
        self.w1 = nn.Parameter(torch.empty(self.n_genes, self.hidden))
        self.w2 = nn.Parameter(torch.empty(self.hidden, self.latent))
        self.att_src = nn.Parameter(torch.empty(self.hidden, 1))
        self.att_dst = nn.Parameter(torch.empty(self.hidden, 1))
        self.fsm = FSM(self.latent, self.llm_dim) if self.llm_dim is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal weights and attention vectors (gain sqrt(2)); the FSM keeps its own initialisation."""
        for p in (self.w1, self.w2, self.att_src, self.att_dst):
            nn.init.xavier_normal_(p, gain=2**0.5)

    def attention(self, u: torch.Tensor, graph: AttentionGraph) -> torch.Tensor:
        """Edge weights from the transformed features ``u = x W1`` (N x hidden): sigmoid scores, edge softmax."""
        s_src = (u @ self.att_src).squeeze(1)
        s_dst = (u @ self.att_dst).squeeze(1)
        scores = torch.sigmoid(s_dst[graph.dst] + s_src[graph.src])
        return edge_softmax(scores, graph.dst, graph.n_nodes)

    def _check(self, x: torch.Tensor, graph: AttentionGraph, h_llm: torch.Tensor | None) -> None:
        if not isinstance(graph, AttentionGraph):
            raise TypeError(
                f"`graph` must be an AttentionGraph (AttentionGraph.from_adjacency(adj)), got "
                f"{type(graph).__name__}."
            )
        if x.ndim != 2 or x.shape != (graph.n_nodes, self.n_genes):
            raise ValueError(
                f"expected `x` of shape ({graph.n_nodes}, {self.n_genes}), got {tuple(x.shape)}."
            )
        if self.fsm is None and h_llm is not None:
            raise ValueError(
                "this model has no FSM (llm_dim=None): pass h_llm=None, or build it with llm_dim."
            )
        if self.fsm is not None and h_llm is None:
            raise ValueError(
                f"this model has an FSM: pass `h_llm` of shape ({graph.n_nodes}, {self.llm_dim})."
            )

    def encode(
        self, x: torch.Tensor, graph: AttentionGraph, h_llm: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, attention)``: the (modulated) embedding and the edge weights."""
        self._check(x, graph, h_llm)
        u = x @ self.w1
        att = self.attention(u, graph)
        h1 = F.elu(edge_aggregate(att, u, graph))
        z = h1 @ self.w2
        if self.fsm is not None:
            z = self.fsm(z, h_llm)
        return z, att

    def decode(self, z: torch.Tensor, attention: torch.Tensor, graph: AttentionGraph) -> torch.Tensor:
        """Reconstruction from the embedding with the encoder's (tied) weights and attention."""
        h3 = F.elu(edge_aggregate(attention, z @ self.w2.t(), graph))
        return h3 @ self.w1.t()

    def forward(self, x: torch.Tensor, graph: AttentionGraph, h_llm: torch.Tensor | None = None) -> GATOutput:
        """Encode, modulate (if FSM), decode.

        Parameters
        ----------
        x
            Dense input, N x n_genes.
        graph
            The spatial graph as an :class:`AttentionGraph` (self-loops included, as STAGATE).
        h_llm
            Semantic embedding, N x llm_dim; required with FSM, must be None without.
        """
        z, att = self.encode(x, graph, h_llm)
        return GATOutput(z=z, recon=self.decode(z, att, graph), attention=att)

    @staticmethod
    def loss(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error over all entries."""
        return F.mse_loss(recon, x)

    def extra_repr(self) -> str:
        return f"n_genes={self.n_genes}, hidden={self.hidden}, latent={self.latent}, llm_dim={self.llm_dim}"
