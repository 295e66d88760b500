"""Fusion of the graph representation with the language-model embedding.

Every fusion maps ``(z_gcn: N x in_dim, h_llm: N x llm_dim or None) -> N x out_dim``. In SemST ``in_dim`` is
``2d`` (the two GCN branches concatenated) and ``out_dim`` is ``d`` (the final embedding). The FiLM module
:class:`FSM` is also usable on its own, in any model: ``FSM(feature_dim, cond_dim)(features, cond)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._constants import FUSIONS

__all__ = [
    "FSM",
    "AddFusion",
    "ConcatFusion",
    "CrossAttentionFusion",
    "FSMFusion",
    "Fusion",
    "NoFusion",
    "make_fusion",
]


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout -> Linear``."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
    )


def _llm_head(llm_dim: int, out_dim: int) -> nn.Sequential:
    """The projection of the language-model vector used by the reference: L -> L/2 -> ReLU -> out."""
    mid = max(1, llm_dim // 2)
    return nn.Sequential(nn.Linear(llm_dim, mid), nn.ReLU(), nn.Linear(mid, out_dim))


def _check_pair(z: torch.Tensor, h: torch.Tensor | None, in_dim: int, llm_dim: int | None, who: str) -> None:
    if z.ndim != 2 or z.shape[1] != in_dim:
        raise ValueError(f"{who}: expected features of shape (N, {in_dim}), got {tuple(z.shape)}.")
    if llm_dim is None:
        return
    if h is None:
        raise ValueError(
            f"{who} needs the language-model embedding `h_llm` (N x {llm_dim}); pass it, or use fusion='none'."
        )
    if h.ndim != 2 or h.shape[0] != z.shape[0] or h.shape[1] != llm_dim:
        raise ValueError(f"{who}: expected `h_llm` of shape ({z.shape[0]}, {llm_dim}), got {tuple(h.shape)}.")


class FSM(nn.Module):
    r"""Fine-grained Semantic Modulation: FiLM conditioning of features on an embedding.

    One MLP turns the condition into ``[alpha | beta]`` (2 x ``feature_dim``), and the output is
    ``(1 + alpha) * features + beta`` (paper eqs. 7-9 without the final weight matrix, which the SemST
    fusion adds as an MLP). Using one MLP for both is deliberate (paper): alpha and beta live in the same
    semantic space and specialise through their gradients.

    The MLP follows the reference: ``cond -> cond/2 -> ReLU -> embed`` (the language-model head), then
    ``embed -> hidden -> ReLU -> dropout -> 2 * feature_dim``. With SemST's sizes (``feature_dim = 2d``,
    ``embed = d``, ``hidden = 1.2 d``) this is ``L -> L/2 -> d -> 1.2d -> 4d``; the 4d output is alpha (2d)
    and beta (2d), because ``Z_gcn`` is 2d wide (the paper writes 2d for a d-wide Z).

    Initialisation: the last layer's weights are the default ones times ``init_scale`` (0.01) and its bias
    is zero, so at the start alpha and beta are close to 0 and the module is close to the identity; the
    graph representation is then modulated progressively. The weights are small but not zero, so every
    layer of the MLP receives a gradient from the first step.

    Parameters
    ----------
    feature_dim
        Width of the modulated features.
    cond_dim
        Width of the conditioning embedding (e.g. the language model's hidden size).
    hidden
        Hidden width of the modulation MLP; default ``round(1.2 * embed_dim)``.
    cond_hidden
        Hidden width of the conditioning head; default ``cond_dim // 2``.
    embed_dim
        Output width of the conditioning head; default ``feature_dim // 2``.
    dropout
        Dropout inside the modulation MLP.
    init_scale
        Factor on the default initialisation of the last layer (0 makes the module exactly the identity
        at the start, but then the earlier layers get no gradient until that layer has moved).
    """

    def __init__(
        self,
        feature_dim: int,
        cond_dim: int,
        hidden: int | None = None,
        *,
        cond_hidden: int | None = None,
        embed_dim: int | None = None,
        dropout: float = 0.0,
        init_scale: float = 0.01,
    ) -> None:
        super().__init__()
        for name, v in (("feature_dim", feature_dim), ("cond_dim", cond_dim)):
            if int(v) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {v}.")
        self.feature_dim = int(feature_dim)
        self.cond_dim = int(cond_dim)
        embed_dim = max(1, self.feature_dim // 2) if embed_dim is None else int(embed_dim)
        hidden = max(1, round(1.2 * embed_dim)) if hidden is None else int(hidden)
        cond_hidden = max(1, self.cond_dim // 2) if cond_hidden is None else int(cond_hidden)
        self.cond_head = nn.Sequential(
            nn.Linear(self.cond_dim, cond_hidden), nn.ReLU(), nn.Linear(cond_hidden, embed_dim)
        )
        self.modulation = _mlp(embed_dim, hidden, 2 * self.feature_dim, dropout)
        self.init_scale = float(init_scale)
        last = self.modulation[-1]
        with torch.no_grad():
            last.weight.mul_(self.init_scale)
            last.bias.zero_()

    def modulation_params(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, beta)``, each (N x feature_dim), from the condition (N x cond_dim)."""
        m = self.modulation(self.cond_head(cond))
        alpha, beta = m.chunk(2, dim=-1)
        return alpha, beta

    def forward(self, features: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``(1 + alpha(cond)) * features + beta(cond)``."""
        _check_pair(features, cond, self.feature_dim, self.cond_dim, "FSM")
        alpha, beta = self.modulation_params(cond)
        return torch.addcmul(features + beta, alpha, features)

    def extra_repr(self) -> str:
        return f"feature_dim={self.feature_dim}, cond_dim={self.cond_dim}, init_scale={self.init_scale}"


class Fusion(nn.Module):
    """Base of the SemST fusions: ``forward(z_gcn, h_llm) -> N x out_dim``."""

    #: whether ``h_llm`` must be given
    requires_llm: bool = True

    def __init__(self, in_dim: int, llm_dim: int | None, hidden: int, out_dim: int) -> None:
        super().__init__()
        if self.requires_llm and (llm_dim is None or int(llm_dim) < 1):
            raise ValueError(
                f"{type(self).__name__} needs `llm_dim` (the width of the language-model embedding); "
                "use fusion='none' to train without semantics."
            )
        self.in_dim = int(in_dim)
        self.llm_dim = None if llm_dim is None or not self.requires_llm else int(llm_dim)
        self.hidden = int(hidden)
        self.out_dim = int(out_dim)

    def _check(self, z: torch.Tensor, h: torch.Tensor | None) -> None:
        _check_pair(z, h, self.in_dim, self.llm_dim, type(self).__name__)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, llm_dim={self.llm_dim}, hidden={self.hidden}, out_dim={self.out_dim}"


class FSMFusion(Fusion):
    """SemST's fusion: :class:`FSM` on ``z_gcn``, then an MLP ``in_dim -> hidden -> ReLU -> out_dim``.

    This is paper eq. 9, with the reference's MLP in place of the single weight matrix ``W``.
    """

    def __init__(
        self, in_dim: int, llm_dim: int | None, hidden: int, out_dim: int, dropout: float = 0.0, **fsm_kwargs
    ) -> None:
        super().__init__(in_dim, llm_dim, hidden, out_dim)
        self.fsm = FSM(self.in_dim, self.llm_dim, dropout=dropout, **fsm_kwargs)
        self.mlp = _mlp(self.in_dim, self.hidden, self.out_dim, dropout)

    def forward(self, z_gcn: torch.Tensor, h_llm: torch.Tensor | None) -> torch.Tensor:
        self._check(z_gcn, h_llm)
        return self.mlp(self.fsm(z_gcn, h_llm))


class ConcatFusion(Fusion):
    """``MLP([z_gcn || proj(h_llm)])`` with ``proj: L -> L/2 -> ReLU -> out_dim`` (paper's concat baseline)."""

    def __init__(
        self, in_dim: int, llm_dim: int | None, hidden: int, out_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__(in_dim, llm_dim, hidden, out_dim)
        self.proj = _llm_head(self.llm_dim, self.out_dim)
        self.mlp = _mlp(self.in_dim + self.out_dim, self.hidden, self.out_dim, dropout)

    def forward(self, z_gcn: torch.Tensor, h_llm: torch.Tensor | None) -> torch.Tensor:
        self._check(z_gcn, h_llm)
        return self.mlp(torch.cat([z_gcn, self.proj(h_llm)], dim=1))


class AddFusion(Fusion):
    """``MLP(z_gcn + proj(h_llm))`` with ``proj: L -> L/2 -> ReLU -> in_dim`` (paper's add baseline)."""

    def __init__(
        self, in_dim: int, llm_dim: int | None, hidden: int, out_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__(in_dim, llm_dim, hidden, out_dim)
        self.proj = _llm_head(self.llm_dim, self.in_dim)
        self.mlp = _mlp(self.in_dim, self.hidden, self.out_dim, dropout)

    def forward(self, z_gcn: torch.Tensor, h_llm: torch.Tensor | None) -> torch.Tensor:
        self._check(z_gcn, h_llm)
        return self.mlp(z_gcn + self.proj(h_llm))


class CrossAttentionFusion(Fusion):
    """Per-spot cross-attention from the graph representation to the semantic embedding.

    Design (the paper names the baseline without details): attention *across spots* would be O(N^2), so
    attention stays *within* a spot. ``z_gcn`` (N x in_dim) is cut into ``n_tokens`` tokens of width
    ``w = in_dim / n_tokens``; ``h_llm`` is projected (``L -> L/2 -> ReLU -> in_dim``) and cut the same
    way. Each spot's graph tokens are queries over its own semantic tokens (single head, scaled dot
    product, a T x T attention per spot), the attended values go through an output projection and are
    added to ``z_gcn`` (residual), then the MLP ``in_dim -> hidden -> ReLU -> out_dim``. Cost and memory
    are O(N * T * in_dim).

    ``n_tokens`` (default 8) must divide ``in_dim``.
    """

    def __init__(
        self,
        in_dim: int,
        llm_dim: int | None,
        hidden: int,
        out_dim: int,
        dropout: float = 0.0,
        n_tokens: int = 8,
    ) -> None:
        super().__init__(in_dim, llm_dim, hidden, out_dim)
        n_tokens = int(n_tokens)
        if n_tokens < 1 or self.in_dim % n_tokens:
            raise ValueError(f"`n_tokens` ({n_tokens}) must be a positive divisor of in_dim ({self.in_dim}).")
        self.n_tokens = n_tokens
        self.token_dim = self.in_dim // n_tokens
        self.proj = _llm_head(self.llm_dim, self.in_dim)
        self.q = nn.Linear(self.token_dim, self.token_dim)
        self.k = nn.Linear(self.token_dim, self.token_dim)
        self.v = nn.Linear(self.token_dim, self.token_dim)
        self.out = nn.Linear(self.in_dim, self.in_dim)
        self.dropout = nn.Dropout(dropout)
        self.mlp = _mlp(self.in_dim, self.hidden, self.out_dim, dropout)

    def forward(self, z_gcn: torch.Tensor, h_llm: torch.Tensor | None) -> torch.Tensor:
        self._check(z_gcn, h_llm)
        n = z_gcn.shape[0]
        zt = z_gcn.reshape(n, self.n_tokens, self.token_dim)
        ht = self.proj(h_llm).reshape(n, self.n_tokens, self.token_dim)
        q, k, v = self.q(zt), self.k(ht), self.v(ht)
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.token_dim), dim=-1)  # N x T x T
        attended = (self.dropout(attn) @ v).reshape(n, self.in_dim)
        return self.mlp(z_gcn + self.out(attended))


class NoFusion(Fusion):
    """No semantics: ``MLP(z_gcn)``; ``h_llm`` is ignored (may be None)."""

    requires_llm = False

    def __init__(
        self, in_dim: int, llm_dim: int | None, hidden: int, out_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__(in_dim, llm_dim, hidden, out_dim)
        self.mlp = _mlp(self.in_dim, self.hidden, self.out_dim, dropout)

    def forward(self, z_gcn: torch.Tensor, h_llm: torch.Tensor | None = None) -> torch.Tensor:
        self._check(z_gcn, None)
        return self.mlp(z_gcn)


_FUSION_CLASSES: dict[str, type[Fusion]] = {
    "fsm": FSMFusion,
    "concat": ConcatFusion,
    "add": AddFusion,
    "cross_attention": CrossAttentionFusion,
    "none": NoFusion,
}
if tuple(_FUSION_CLASSES) != FUSIONS:  # pragma: no cover - guards the two lists against drifting apart
    raise RuntimeError("semst_sc.nn fusion registry is out of sync with _constants.FUSIONS")


def make_fusion(
    name: str,
    in_dim: int,
    llm_dim: int | None,
    hidden: int,
    out_dim: int,
    *,
    dropout: float = 0.0,
    **kwargs,
) -> Fusion:
    """Build the fusion called ``name`` (one of ``"fsm"``, ``"concat"``, ``"add"``, ``"cross_attention"``,
    ``"none"``).

    Parameters
    ----------
    name
        Which fusion.
    in_dim
        Width of ``z_gcn`` (2d in SemST).
    llm_dim
        Width of ``h_llm``; may be None only for ``"none"``.
    hidden
        Hidden width of the output MLP.
    out_dim
        Width of the fused output (d).
    dropout
        Dropout inside the MLPs.
    **kwargs
        Extra options of the chosen class (e.g. ``n_tokens`` for cross-attention, ``init_scale`` for FSM).

    Returns
    -------
    Fusion
        A module with ``forward(z_gcn, h_llm) -> N x out_dim``.
    """
    if not isinstance(name, str) or name not in _FUSION_CLASSES:
        raise ValueError(f"Unknown fusion {name!r}; valid choices: {', '.join(map(repr, FUSIONS))}.")
    return _FUSION_CLASSES[name](in_dim, llm_dim, hidden, out_dim, dropout=dropout, **kwargs)
