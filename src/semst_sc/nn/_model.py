"""The SemST network: two GCN branches, a fusion with the language-model embedding, a ZINB decoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._constants import FUSIONS, GCN_NORMS, PRECISIONS
from ._fusion import make_fusion
from ._gcn import GCN, _propagate, feature_matmul
from ._losses import SPATIAL_WEIGHTINGS, correlation_reduction_loss, spatial_regularization_loss
from ._zinb import DECODER_MODES, ZINBDecoder, ZINBTarget

__all__ = ["SemSTModule", "SemSTOutput"]


@dataclass
class SemSTOutput:
    """What :meth:`SemSTModule.forward` returns.

    Attributes
    ----------
    z
        The embedding ``Z_final`` (N x latent): use this for clustering.
    h_spa, h_fea
        Outputs of the spatial and feature GCN branches (N x latent each).
    mu, theta, pi
        ZINB parameters (N x n_genes each); None when the forward pass ran with ``decode=False``.
    decoder_hidden
        The decoder's hidden state (N x hidden), input of the ZINB heads (the loss reads it).
    size_factors
        The size factors given to the forward pass (``decoder="counts"``), else None.
    """

    z: torch.Tensor
    h_spa: torch.Tensor
    h_fea: torch.Tensor
    mu: torch.Tensor | None
    theta: torch.Tensor | None
    pi: torch.Tensor | None
    decoder_hidden: torch.Tensor
    size_factors: torch.Tensor | None = None


class SemSTModule(nn.Module):
    """SemST: dual-graph GCN, semantic fusion (FSM by default) and ZINB decoder (METHOD.md 1.4-1.5).

    ``x -> GCN_spa(x, A_spa) = H_spa``, ``GCN_fea(x, A_fea) = H_fea`` (each M -> hidden -> ReLU -> latent),
    ``Z_gcn = [H_spa || H_fea]`` (2 x latent), ``Z = fusion(Z_gcn, H_llm)`` (latent), then the ZINB decoder
    on ``Z``. The first layers of both branches read the same ``x``, so ``x @ [W_spa | W_fea]`` is computed
    as one product (the same numbers as two products, cheaper).

    Parameters
    ----------
    n_genes
        Number of input genes (columns of ``x``, and genes the decoder models).
    llm_dim
        Width of the language-model embedding; None only with ``fusion="none"``.
    hidden
        Hidden width of the GCNs, the fusion MLP and the decoder (256 in the reference on DLPFC).
    latent
        Embedding width d (128 on DLPFC).
    fusion
        ``"fsm"`` (SemST), ``"concat"``, ``"add"``, ``"cross_attention"`` or ``"none"``.
    gcn_norm
        Adjacency normalisation the inputs must use: ``"row"`` (reference) or ``"sym"``. Stored here so the
        training loop normalises the graphs accordingly; the module itself takes normalised graphs.
    dropout
        Dropout in the GCNs and MLPs (0 in the reference).
    decoder
        ``"faithful"`` (ZINB on the scaled matrix) or ``"counts"`` (ZINB on raw counts with size factors).
    fusion_kwargs
        Extra options for the fusion (e.g. ``{"n_tokens": 8}``, ``{"init_scale": 0.01}``).
    precision
        ``"float32"`` (default) or ``"bfloat16"``: mixed precision for the two large matrix products of an
        epoch, ``x @ W`` of the first GCN layer (dense ``x`` only) and the ZINB heads. Their operands are
        rounded to bfloat16 and the products accumulate in float32; every other operation, the loss and
        the parameters stay float32. The products run about 2x faster on a CPU with native bfloat16
        (AVX512-BF16, AMX; measured here); on CPUs without it they are emulated and expected to be slower.
    """

    def __init__(
        self,
        n_genes: int,
        llm_dim: int | None,
        *,
        hidden: int = 256,
        latent: int = 128,
        fusion: str = "fsm",
        gcn_norm: str = "row",
        dropout: float = 0.0,
        decoder: str = "faithful",
        fusion_kwargs: dict[str, Any] | None = None,
        precision: str = "float32",
    ) -> None:
        super().__init__()
        for name, v in (("n_genes", n_genes), ("hidden", hidden), ("latent", latent)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v!r}.")
        if llm_dim is not None and (isinstance(llm_dim, bool) or not isinstance(llm_dim, int) or llm_dim < 1):
            raise ValueError(f"`llm_dim` must be a positive integer or None, got {llm_dim!r}.")
        if fusion not in FUSIONS:
            raise ValueError(f"Unknown fusion {fusion!r}; valid choices: {', '.join(map(repr, FUSIONS))}.")
        if gcn_norm not in GCN_NORMS:
            raise ValueError(
                f"Unknown `gcn_norm` {gcn_norm!r}; valid choices: {', '.join(map(repr, GCN_NORMS))}."
            )
        if decoder not in DECODER_MODES:
            raise ValueError(
                f"Unknown `decoder` {decoder!r}; valid choices: {', '.join(map(repr, DECODER_MODES))}."
            )
        if precision not in PRECISIONS:
            raise ValueError(
                f"Unknown `precision` {precision!r}; valid choices: {', '.join(map(repr, PRECISIONS))}."
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout}.")
        self.n_genes, self.llm_dim = n_genes, (llm_dim if fusion != "none" else None)
        self.hidden, self.latent = hidden, latent
        self.fusion_name, self.gcn_norm, self.dropout, self.decoder_mode = (
            fusion,
            gcn_norm,
            float(dropout),
            decoder,
        )
        self.fusion_kwargs = dict(fusion_kwargs or {})
        self.precision = precision
        self.gcn_spa = GCN(n_genes, hidden, latent, self.dropout)
        self.gcn_fea = GCN(n_genes, hidden, latent, self.dropout)
        self.fusion = make_fusion(
            fusion, 2 * latent, self.llm_dim, hidden, latent, dropout=self.dropout, **self.fusion_kwargs
        )
        self.decoder = ZINBDecoder(latent, hidden, n_genes, mode=decoder)

    # -- configuration (for saving and rebuilding) -------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments; ``SemSTModule.from_config(m.config)`` rebuilds the same architecture."""
        return {
            "n_genes": self.n_genes,
            "llm_dim": self.llm_dim,
            "hidden": self.hidden,
            "latent": self.latent,
            "fusion": self.fusion_name,
            "gcn_norm": self.gcn_norm,
            "dropout": self.dropout,
            "decoder": self.decoder_mode,
            "fusion_kwargs": dict(self.fusion_kwargs),
            "precision": self.precision,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SemSTModule:
        """Build a module from :attr:`config`."""
        cfg = dict(config)
        return cls(cfg.pop("n_genes"), cfg.pop("llm_dim"), **cfg)

    @property
    def _matmul_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bfloat16" else None

    @property
    def uses_llm(self) -> bool:
        """Whether the forward pass needs ``h_llm``."""
        return self.fusion.requires_llm

    # -- forward -------------------------------------------------------------------------------------------
    def encode(
        self,
        x: torch.Tensor,
        adj_spa: torch.Tensor,
        adj_fea: torch.Tensor,
        h_llm: torch.Tensor | None = None,
        *,
        x_propagated: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z, h_spa, h_fea)``: the embedding and the two branch outputs (no decoder).

        ``x_propagated``: ``(adj_spa @ x, adj_fea @ x)`` from :meth:`propagate_input`, made once for inputs
        that do not change; the first GCN layers then read them instead of propagating ``x @ W``.
        """
        if x.ndim != 2 or x.shape[1] != self.n_genes:
            raise ValueError(f"`x` must be (N x {self.n_genes}), got {tuple(x.shape)}.")
        n = x.shape[0]
        for name, a in (("adj_spa", adj_spa), ("adj_fea", adj_fea)):
            if tuple(a.shape) != (n, n):
                raise ValueError(f"`{name}` must be ({n} x {n}) to match `x`, got {tuple(a.shape)}.")
        if x_propagated is not None:
            ax_spa, ax_fea = x_propagated
            for name, a in (("x_propagated[0]", ax_spa), ("x_propagated[1]", ax_fea)):
                if tuple(a.shape) != tuple(x.shape):
                    raise ValueError(f"`{name}` must be {tuple(x.shape)} like `x`, got {tuple(a.shape)}.")
            h_spa = self.gcn_spa.forward_from_propagated(ax_spa, adj_spa)
            h_fea = self.gcn_fea.forward_from_propagated(ax_fea, adj_fea)
        else:
            # x @ [W_spa | W_fea] once for both branches
            w = torch.cat([self.gcn_spa.layer1.weight, self.gcn_fea.layer1.weight], dim=1)
            low = self._matmul_dtype
            if low is not None and x.layout == torch.strided:
                support = (x.to(low) @ w.to(low)).float()  # x.to is free when the caller rounded x already
            else:
                support = feature_matmul(x, w)
            # split, not two slices: its backward joins the two gradients in one copy, where each slice's
            # backward would fill an N x 2 hidden matrix of zeros and the two would then be added
            s_spa, s_fea = support.split(self.hidden, dim=1)
            h_spa = self.gcn_spa.forward_from_support(s_spa.contiguous(), adj_spa)
            h_fea = self.gcn_fea.forward_from_support(s_fea.contiguous(), adj_fea)
        z = self.fusion(torch.cat([h_spa, h_fea], dim=1), h_llm)
        return z, h_spa, h_fea

    @torch.no_grad()
    def propagate_input(
        self, x: torch.Tensor, adj_spa: torch.Tensor, adj_fea: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(adj_spa @ x, adj_fea @ x)``, dense, in the graphs' dtype, for :meth:`encode`'s ``x_propagated``.

        Worth it where the panel is narrow: with ``n_genes <= hidden`` the two products are no larger than
        the first layers' output, and the first layers then skip a sparse product per forward and backward
        (on osmFISH's 33 genes the two GCNs' forward and backward took 14 ms instead of 28). Returns None
        where ``n_genes > hidden``: the products would be N x n_genes dense matrices, larger than anything
        the network holds (8 GB per branch at a million spots and 2000 genes).
        """
        if self.n_genes > self.hidden:
            return None
        xd = x.to_dense() if x.layout != torch.strided else x
        xd = xd.to(adj_spa.dtype)
        return _propagate(adj_spa, xd), _propagate(adj_fea, xd)

    def forward(
        self,
        x: torch.Tensor,
        adj_spa: torch.Tensor,
        adj_fea: torch.Tensor,
        h_llm: torch.Tensor | None = None,
        size_factors: torch.Tensor | None = None,
        *,
        decode: bool = True,
        x_propagated: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> SemSTOutput:
        """Run the network.

        Parameters
        ----------
        x
            Expression (N x n_genes), dense or sparse CSR.
        adj_spa, adj_fea
            Normalised spatial and feature adjacencies (sparse CSR, N x N), see
            :func:`~semst_sc.nn.normalize_adjacency` with ``norm=self.gcn_norm``.
        h_llm
            Language-model embedding (N x llm_dim); ignored (may be None) with ``fusion="none"``.
        size_factors
            Per-spot size factors (N,), ``decoder="counts"`` only.
        decode
            Also compute ``mu, theta, pi`` (N x n_genes each). Training does not need them: the loss works
            from ``decoder_hidden`` without materialising them.
        x_propagated
            See :meth:`encode`.
        """
        z, h_spa, h_fea = self.encode(x, adj_spa, adj_fea, h_llm, x_propagated=x_propagated)
        hidden = self.decoder.hidden_state(z)
        mu = theta = pi = None
        if decode:
            mu, theta, pi = self.decoder.params(hidden, size_factors)
        else:
            self.decoder._check_size_factors(size_factors, x.shape[0])
        return SemSTOutput(z, h_spa, h_fea, mu, theta, pi, hidden, size_factors)

    # -- loss ----------------------------------------------------------------------------------------------
    def loss(
        self,
        out: SemSTOutput,
        target: ZINBTarget | torch.Tensor,
        spatial_edges: tuple[torch.Tensor, torch.Tensor],
        gamma: float = 0.1,
        lambda_s: float = 0.1,
        *,
        ridge: float = 0.05,
        n_negatives: int | None = 10,
        generator: torch.Generator | None = None,
        spatial_weighting: str = "reference",
        zinb_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``L = L_zinb + gamma * L_cr + lambda_s * L_s`` (paper eq. 14).

        Parameters
        ----------
        out
            Output of :meth:`forward`.
        target
            The ZINB target: a :class:`~semst_sc.nn.ZINBTarget` (prepare once) or a dense tensor
            (N x n_genes); the scaled matrix (``decoder="faithful"``) or raw counts (``"counts"``).
        spatial_edges
            ``(rows, cols)`` of the spatial neighbour pairs (see :func:`~semst_sc.nn.edge_index`).
        gamma, lambda_s
            Weights of the correlation-reduction and spatial losses (0.1 / 0.1 on DLPFC).
        ridge
            Ridge weight on ``pi^2`` inside the ZINB loss.
        n_negatives, generator, spatial_weighting
            Passed to :func:`~semst_sc.nn.spatial_regularization_loss`.
        zinb_index
            None: the ZINB term covers every spot. A 1-D index tensor of spots: the ZINB term covers only
            those rows of ``out`` (in that order), and ``target`` holds their rows only; the two other
            terms still cover every spot. The mean over a block is an unbiased estimate of the full mean.

        Returns
        -------
        tuple
            The total loss (scalar tensor, differentiable) and a dict of floats
            ``{"loss", "zinb", "cr", "spatial"}`` (unweighted parts, plus the weighted total).
        """
        if spatial_weighting not in SPATIAL_WEIGHTINGS:
            raise ValueError(
                f"Unknown `spatial_weighting` {spatial_weighting!r}; "
                f"valid choices: {', '.join(map(repr, SPATIAL_WEIGHTINGS))}."
            )
        hidden, sf = out.decoder_hidden, out.size_factors
        if zinb_index is not None:
            hidden = hidden.index_select(0, zinb_index)
            sf = None if sf is None else sf.index_select(0, zinb_index)
        l_zinb = self.decoder.nll(hidden, target, sf, ridge=ridge, matmul_dtype=self._matmul_dtype)
        l_cr = correlation_reduction_loss(out.h_spa, out.h_fea)
        rows, cols = spatial_edges
        l_s = spatial_regularization_loss(
            out.z, rows, cols, n_negatives=n_negatives, generator=generator, weighting=spatial_weighting
        )
        total = l_zinb + gamma * l_cr + lambda_s * l_s
        parts = torch.stack([total.detach(), l_zinb.detach(), l_cr.detach(), l_s.detach()]).tolist()
        return total, dict(zip(("loss", "zinb", "cr", "spatial"), parts, strict=True))
