"""Zero-inflated negative binomial (ZINB) decoder and negative log-likelihood.

Two implementations of the same loss live here:

- :func:`zinb_nll`, the plain autograd formula, on explicit ``mu, theta, pi`` matrices;
- :meth:`ZINBDecoder.nll`, a fused version used for training: it takes the decoder's hidden state and a
  prepared :class:`ZINBTarget`, computes the three heads chunk by chunk (rows), evaluates the
  likelihood and its analytic gradient in the same pass, and never holds more than one chunk of the
  N x 3M head output. The lgamma/digamma terms of the negative binomial are evaluated only where the
  target is non-zero (a zero entry uses the zero-inflated branch, which needs none). Same maths, same numbers up to
  float rounding (tested against :func:`zinb_nll` and its autograd gradient), several times faster and
  with memory O(chunk x M) instead of O(N x M) per intermediate.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DECODER_MODES", "ZINBDecoder", "ZINBTarget", "zinb_nll"]

DECODER_MODES = ("faithful", "counts")

MU_MIN, MU_MAX = 1e-5, 1e6
THETA_MIN, THETA_MAX = 1e-4, 1e4
ZERO_THRESHOLD = 1e-8  # target entries below this are "zero" (the zero-inflated branch)


def zinb_nll(
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    pi: torch.Tensor,
    ridge: float = 0.05,
    eps: float = 1e-10,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Negative log-likelihood of ``x`` under ZINB(mu, theta, pi), plus a ridge penalty on ``pi``.

    Per entry, with :math:`\mathrm{NB}(x) = \frac{\Gamma(x+\theta)}{\Gamma(\theta)\,x!}
    \left(\frac{\theta}{\theta+\mu}\right)^{\theta}\left(\frac{\mu}{\theta+\mu}\right)^{x}`:

    - :math:`x = 0`: :math:`-\log(\pi + (1-\pi)\,\mathrm{NB}(0))`, with
      :math:`\mathrm{NB}(0) = (\theta / (\theta + \mu))^{\theta}`;
    - :math:`x > 0`: :math:`-\log(1-\pi) - \log \mathrm{NB}(x)`, written with ``lgamma`` as
      ``lgamma(theta) + lgamma(x+1) - lgamma(x+theta) + (theta+x) log1p(mu/theta) + x (log theta - log mu)``.

    ``eps`` guards every log and division as in the reference (DCA-style) formula. Entries below 1e-8
    count as zero. Non-integer ``x`` (the "faithful" mode fits scaled expression) goes through the same
    ``lgamma`` expression, i.e. the continuous extension of the NB log-density.

    Parameters
    ----------
    x
        Target (N x M), non-negative.
    mu, theta, pi
        Mean (> 0), dispersion (> 0) and dropout probability (in (0, 1)), same shape as ``x``.
    ridge
        Weight of ``mean(pi^2)`` added to the loss (0.05 in the reference).
    eps
        Numerical guard.
    reduction
        ``"mean"`` (over all entries; the loss used in training), ``"sum"`` or ``"none"`` (per entry).

    Returns
    -------
    torch.Tensor
        Scalar (or per-entry matrix for ``reduction="none"``).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"`reduction` must be 'mean', 'sum' or 'none', got {reduction!r}.")
    if not (x.shape == mu.shape == theta.shape == pi.shape):
        raise ValueError(
            "x, mu, theta and pi must have the same shape, got "
            f"{tuple(x.shape)}, {tuple(mu.shape)}, {tuple(theta.shape)}, {tuple(pi.shape)}."
        )
    te = theta + eps
    nb = (
        torch.lgamma(te)
        + torch.lgamma(x + 1.0)
        - torch.lgamma(x + te)
        + (theta + x) * torch.log1p(mu / te)
        + x * (torch.log(te) - torch.log(mu + eps))
    )
    nb_case = nb - torch.log(1.0 - pi + eps)
    zero_nb = torch.exp(theta * torch.log(theta / (theta + mu + eps)))
    zero_case = -torch.log(pi + (1.0 - pi) * zero_nb + eps)
    out = torch.where(x < ZERO_THRESHOLD, zero_case, nb_case)
    if ridge:
        out = out + ridge * pi.square()
    if reduction == "mean":
        return out.mean()
    if reduction == "sum":
        return out.sum()
    return out


class ZINBTarget:
    """A ZINB target prepared once for :meth:`ZINBDecoder.nll`: its non-zeros in CSR order.

    Only the non-zero entries (>= 1e-8) are stored, with their row-major flat positions and the
    constant ``sum(lgamma(x + 1))``; the matrix is never densified.

    Parameters
    ----------
    x
        Non-negative target, N x M: scipy sparse matrix, numpy array or torch tensor.
    device, dtype
        Where and in which precision to keep the values.
    """

    def __init__(self, x, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            x = sp.csr_matrix(x.to_dense().numpy()) if x.layout != torch.strided else sp.csr_matrix(x.numpy())
        elif sp.issparse(x):
            x = sp.csr_matrix(x)
        elif isinstance(x, np.ndarray):
            x = sp.csr_matrix(x)
        else:
            raise TypeError(
                f"ZINB target must be a scipy sparse matrix, numpy array or torch tensor, got {type(x).__name__}."
            )
        if x.ndim != 2:
            raise ValueError(f"ZINB target must be 2-D (spots x genes), got shape {x.shape}.")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(f"ZINB target must be real-valued, got dtype {x.dtype}.")
        data = np.asarray(x.data, dtype=np.float64)
        if data.size and not np.all(np.isfinite(data)):
            raise ValueError("ZINB target contains NaN or infinite values.")
        if data.size and data.min() < 0:
            raise ValueError(
                "ZINB target has negative values; the ZINB likelihood needs non-negative data "
                "(counts, or expression scaled without centring)."
            )
        x = x.copy()
        x.data[x.data < ZERO_THRESHOLD] = 0
        x.eliminate_zeros()
        x.sort_indices()
        self.shape = (int(x.shape[0]), int(x.shape[1]))
        n, m = self.shape
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(x.indptr))
        self.indptr = np.asarray(x.indptr, dtype=np.int64)
        self.flat = torch.from_numpy(rows * m + x.indices.astype(np.int64)).to(device)
        self.values = torch.from_numpy(np.asarray(x.data, dtype=np.float64)).to(device=device, dtype=dtype)
        self.lgamma_sum = float(torch.lgamma(torch.from_numpy(np.asarray(x.data, np.float64)) + 1.0).sum())
        self.nnz = int(x.nnz)
        self.device = torch.device(device)

    def to(self, device: torch.device | str) -> ZINBTarget:
        """Move the stored tensors (in place) and return self."""
        self.flat = self.flat.to(device)
        self.values = self.values.to(device)
        self.device = torch.device(device)
        return self

    def dense(self) -> torch.Tensor:
        """The target as a dense tensor (for tests and small data only)."""
        out = torch.zeros(self.shape[0] * self.shape[1], dtype=self.values.dtype, device=self.values.device)
        out[self.flat] = self.values
        return out.reshape(self.shape)

    def __repr__(self) -> str:
        return f"ZINBTarget(shape={self.shape}, nnz={self.nnz})"


def _pick_chunk_rows(n: int, m: int, device: torch.device) -> int:
    """Rows per chunk of the fused loss's head products (the N x 3M logits are made one chunk at a time).

    On CPU about 2^20 entries (rows x M) with one thread, 2^22 with several; on GPU 2^24. Where the chunks
    fall decides the order in which the weight gradient is summed, hence its last bits: keep this rule
    unchanged unless every recorded result is rerun (on DLPFC 151673 a different split of the rows moved
    two of five seeds by 0.1 to 0.17 ARI, see benchmarks/README.md).
    """
    if device.type != "cpu":
        budget = 1 << 24
    else:
        budget = 1 << 22 if torch.get_num_threads() > 1 else 1 << 20
    return max(1, min(n, budget // max(m, 1)))


def _pick_block_rows(m: int, rows: int, device: torch.device) -> int:
    """Rows per block of the element-wise part of the fused loss, for a chunk of ``rows`` rows.

    On CPU blocks of equal size, each at most about 2^19 entries (2 MB per float32 temporary): the dozen
    temporaries of one block stay in the processor's cache instead of streaming through memory (measured
    on DLPFC: the element-wise part about a third faster than on whole 2^22-entry chunks). The gradient
    is the same whatever the blocks. On GPU the whole chunk at once.
    """
    if device.type != "cpu":
        return rows
    cap = max(1, min(rows, (1 << 19) // max(m, 1)))
    return -(-rows // -(-rows // cap))


class _Workspace:
    """Reusable work buffers for the fused loss (allocating large tensors costs page faults each call).

    One flat buffer per name, kept while it is large enough: a request for fewer entries gets a view of its
    start. Training alternates row blocks of unequal sizes (2929 spots in two blocks: 1464 and 1465 rows),
    and a buffer keyed by its exact shape was freed and allocated again on every epoch; above glibc's
    mmap threshold (32 MB at most) each new one comes back from the kernel and every page faults on its
    first touch (measured on DLPFC: about 19 ms an epoch, 5.6 s of a 66 s call).
    """

    def __init__(self) -> None:
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        numel = math.prod(shape)
        buf = self._bufs.get(name)
        if buf is None or buf.dtype != like.dtype or buf.device != like.device or buf.numel() < numel:
            self._bufs.pop(name, None)  # free the old one before taking the new one
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._bufs[name] = buf
        return buf[:numel].view(shape)

    def clear(self) -> None:
        self._bufs.clear()


def _zinb_block(logits, g, size_factors, target, r0, r1, ridge, eps) -> torch.Tensor:
    """Loss (float64 scalar) of target rows ``r0:r1`` from their logits; writes their logit gradient in ``g``.

    ``logits`` is the (rows x 3M) head output of these rows; ``g`` (same shape) receives the gradient of
    the summed loss with respect to it, or is None when no gradient is wanted.
    """
    m = logits.shape[1] // 3
    lo, hi = math.log(MU_MIN), math.log(MU_MAX)
    la, lb, lc = logits[:, :m], logits[:, m : 2 * m], logits[:, 2 * m :]
    # the heads
    mu = torch.clamp(la, lo, hi).exp_()  # == clamp(exp(a), MU_MIN, MU_MAX)
    if size_factors is not None:
        mu.mul_(size_factors[:, None])
    theta = F.softplus(lb).clamp_(THETA_MIN, THETA_MAX)
    pi = torch.sigmoid(lc)
    # zero branch, on every entry: -log(pi + (1 - pi) q + eps), q = r^theta
    r = torch.add(theta, mu).add_(eps)
    torch.div(theta, r, out=r)
    logr = torch.log(r)
    q = torch.mul(theta, logr).exp_()
    one_m_pi = torch.sub(1.0, pi)
    t = torch.mul(one_m_pi, q)  # (1 - pi) q
    dd = torch.add(t, pi).add_(eps)
    log_dd = torch.log(dd)
    # the non-zero entries of these rows: the negative-binomial branch. Gathers and scatters go through
    # index_select / scatter_ on flat views (the indices are unique and sorted): several times faster
    # than advanced indexing, whose deterministic mode sorts the indices again.
    p0, p1 = int(target.indptr[r0]), int(target.indptr[r1])
    idx = target.flat[p0:p1] - r0 * m
    x = target.values[p0:p1]
    mu_z = mu.view(-1).index_select(0, idx)
    th_z = theta.view(-1).index_select(0, idx)
    pi_z = pi.view(-1).index_select(0, idx)
    te = th_z + eps
    l1p = torch.log1p(mu_z / te)
    nb = (
        torch.lgamma(te)
        - torch.lgamma(x + te)
        + (th_z + x) * l1p
        + x * (torch.log(te) - torch.log(mu_z + eps))
        - torch.log(1.0 - pi_z + eps)
    )
    # float32 block sums (pairwise summation inside torch), accumulated in float64 by the caller
    total = nb.sum() - log_dd.sum() + log_dd.view(-1).index_select(0, idx).sum()
    if ridge:
        total = total + ridge * torch.linalg.vector_norm(pi).square()
    if g is None:
        return total.to(torch.float64)
    w = t.div_(dd)  # (1 - pi) q / D
    g_mu = torch.mul(w, r)
    g_th = r.sub_(logr).sub_(1.0).mul_(w)  # r is not needed any more
    g_pi = q.sub_(1.0).div_(dd)  # nor is q
    tem = te + mu_z
    g_mu.view(-1).scatter_(0, idx, (th_z + x) / tem - x / (mu_z + eps))
    g_th.view(-1).scatter_(
        0, idx, torch.digamma(te) - torch.digamma(x + te) + l1p - (th_z + x) * mu_z / (te * tem) + x / te
    )
    g_pi.view(-1).scatter_(0, idx, 1.0 / (1.0 - pi_z + eps))
    if ridge:
        g_pi.add_(pi, alpha=2.0 * ridge)
    # chain rule through the heads, written into the (rows x 3M) logit gradient
    ga, gb, gc = g[:, :m], g[:, m : 2 * m], g[:, 2 * m :]
    torch.mul(g_mu, mu, out=ga)
    la_min, la_max = torch.aminmax(la)
    if la_min < lo or la_max > hi:  # the clamp is active somewhere: no gradient there
        ga.masked_fill_((la < lo) | (la > hi), 0.0)
    torch.mul(g_th, torch.sigmoid(lb), out=gb)
    th_min, th_max = torch.aminmax(theta)
    if th_min <= THETA_MIN or th_max >= THETA_MAX:
        gb.masked_fill_((theta <= THETA_MIN) | (theta >= THETA_MAX), 0.0)
    torch.mul(g_pi, pi, out=gc).mul_(one_m_pi)
    return total.to(torch.float64)


class _FusedZINBLoss(torch.autograd.Function):
    """Loss ``zinb_nll(x, heads(h))`` and its gradient w.r.t. ``h``, ``W`` and ``b``, chunk by chunk.

    The gradient is computed analytically during the forward pass (the loss is a scalar, so the backward
    pass only rescales it by ``grad_output``); nothing of size N x M outlives one chunk of rows.

    Derivatives used (``D = pi + (1 - pi) q + eps``, ``q = r^theta``, ``r = theta / (theta + mu + eps)``,
    ``te = theta + eps``):

    - zero branch ``-log D``: d/dmu = (1-pi) q r / D; d/dtheta = -(1-pi) q (log r + 1 - r) / D;
      d/dpi = -(1 - q) / D;
    - non-zero branch: d/dmu = (theta + x) / (te + mu) - x / (mu + eps);
      d/dtheta = digamma(te) - digamma(x + te) + log1p(mu / te) - (theta + x) mu / (te (te + mu)) + x / te;
      d/dpi = 1 / (1 - pi + eps);
    - ridge: d/dpi += 2 ridge pi; heads: dmu/da = mu, dtheta/db = sigmoid(b) (both 0 where clamped),
      dpi/dc = pi (1 - pi).
    """

    @staticmethod
    def forward(
        ctx, h, weight, bias, size_factors, target, ridge, eps, chunk_rows, workspace, with_grad, matmul_dtype
    ):
        n, m = target.shape
        # mixed precision: the head products take rounded operands and accumulate in float32
        low = matmul_dtype is not None and matmul_dtype != h.dtype
        h_low = h.to(matmul_dtype) if low else None
        w_low = weight.to(matmul_dtype) if low else None
        total = torch.zeros((), dtype=torch.float64, device=h.device)
        grad_h = torch.empty_like(h) if with_grad else None
        grad_w = torch.zeros_like(weight) if with_grad else None
        grad_b = torch.zeros_like(bias) if with_grad else None
        scale = 1.0 / (n * m)
        for r0 in range(0, n, chunk_rows):
            r1 = min(n, r0 + chunk_rows)
            rr = r1 - r0
            hc = h[r0:r1]
            logits = workspace.get("logits", (chunk_rows, 3 * m), h)[:rr]
            if low:
                logits.copy_(torch.mm(h_low[r0:r1], w_low.t())).add_(bias)
            else:
                torch.addmm(bias, hc, weight.t(), out=logits)
            g = workspace.get("grad", (chunk_rows, 3 * m), h)[:rr] if with_grad else None
            block_rows = _pick_block_rows(m, rr, h.device)
            for b0 in range(0, rr, block_rows):
                b1 = min(rr, b0 + block_rows)
                total += _zinb_block(
                    logits[b0:b1],
                    None if g is None else g[b0:b1],
                    None if size_factors is None else size_factors[r0 + b0 : r0 + b1],
                    target,
                    r0 + b0,
                    r0 + b1,
                    ridge,
                    eps,
                )
            if not with_grad:
                continue
            if low:
                g_low = g.to(matmul_dtype)
                grad_h[r0:r1].copy_(torch.mm(g_low, w_low))
                grad_w.add_(torch.mm(g_low.t(), h_low[r0:r1]))
            else:
                torch.mm(g, weight, out=grad_h[r0:r1])
                grad_w.addmm_(g.t(), hc)
            grad_b.add_(g.sum(0))
        if with_grad:  # the 1 / (N M) of the mean, applied once
            grad_h.mul_(scale)
            grad_w.mul_(scale)
            grad_b.mul_(scale)
        ctx.grads = (grad_h, grad_w, grad_b)
        # plus the constant sum of lgamma(x + 1) over the non-zeros (it has no gradient)
        return ((total + target.lgamma_sum) * scale).to(h.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.grads
        if grad_h is None:
            raise RuntimeError("fused ZINB loss: backward called on a forward run without gradients")
        return (
            grad_out * grad_h,
            grad_out * grad_w,
            grad_out * grad_b,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


class ZINBDecoder(nn.Module):
    """Decoder from the embedding to the ZINB parameters ``(mu, theta, pi)`` of every gene.

    ``z -> Linear(latent, hidden) -> BatchNorm1d -> ReLU -> h``, then three heads on ``h``:
    ``pi = sigmoid``, ``theta = clamp(softplus, 1e-4, 1e4)``, ``mu = clamp(exp, 1e-5, 1e6)``. The three
    heads are stored as ONE ``Linear(hidden, 3 * n_genes)`` (rows: mu, theta, pi): the same function and
    the same initial distribution as three separate layers, computed in one matrix product.

    Modes
    -----
    ``"faithful"``
        ``mu`` is predicted directly; the target is the scaled expression matrix (the reference).
    ``"counts"``
        ``mu = size_factor * clamp(exp(.), 1e-5, 1e6)``: a per-spot size factor (e.g. library size
        divided by its median) times a predicted normalised mean; the target is the raw counts.

    Parameters
    ----------
    latent
        Width of the embedding.
    hidden
        Width of the hidden layer.
    n_genes
        Number of genes modelled.
    mode
        ``"faithful"`` or ``"counts"``.
    """

    def __init__(self, latent: int, hidden: int, n_genes: int, mode: str = "faithful") -> None:
        super().__init__()
        if mode not in DECODER_MODES:
            raise ValueError(
                f"Unknown decoder mode {mode!r}; valid choices: {', '.join(map(repr, DECODER_MODES))}."
            )
        self.latent, self.hidden, self.n_genes, self.mode = int(latent), int(hidden), int(n_genes), mode
        self.body = nn.Sequential(nn.Linear(self.latent, self.hidden), nn.BatchNorm1d(self.hidden), nn.ReLU())
        self.heads = nn.Linear(self.hidden, 3 * self.n_genes)
        self._workspace = _Workspace()

    def _check_size_factors(self, size_factors: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if self.mode == "faithful":
            if size_factors is not None:
                raise ValueError("size factors are only used with decoder mode 'counts'; pass None.")
            return None
        if size_factors is None:
            raise ValueError(
                "decoder mode 'counts' needs per-spot `size_factors` (e.g. library size / median)."
            )
        size_factors = size_factors.reshape(-1)
        if size_factors.shape[0] != n:
            raise ValueError(
                f"`size_factors` must have one value per spot ({n}), got {size_factors.shape[0]}."
            )
        return size_factors

    def hidden_state(self, z: torch.Tensor) -> torch.Tensor:
        """``ReLU(BatchNorm(Linear(z)))``, the input of the three heads."""
        return self.body(z)

    def params(
        self, h: torch.Tensor, size_factors: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mu, theta, pi)`` (each N x n_genes) from the hidden state ``h``."""
        size_factors = self._check_size_factors(size_factors, h.shape[0])
        la, lb, lc = self.heads(h).split(self.n_genes, dim=1)
        mu = torch.clamp(torch.exp(la), MU_MIN, MU_MAX)
        if size_factors is not None:
            mu = mu * size_factors[:, None]
        theta = torch.clamp(F.softplus(lb), THETA_MIN, THETA_MAX)
        pi = torch.sigmoid(lc)
        return mu, theta, pi

    def forward(
        self, z: torch.Tensor, size_factors: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mu, theta, pi)`` from the embedding ``z``."""
        return self.params(self.hidden_state(z), size_factors)

    def nll(
        self,
        h: torch.Tensor,
        target: ZINBTarget | torch.Tensor,
        size_factors: torch.Tensor | None = None,
        *,
        ridge: float = 0.05,
        eps: float = 1e-10,
        chunk_rows: int | None = None,
        matmul_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """ZINB loss of ``target`` given the hidden state ``h`` (the fused, chunked computation).

        Equals ``zinb_nll(target, *self.params(h, size_factors), ridge=ridge, eps=eps)`` and has the same
        gradient, without materialising the N x 3M head output.

        Parameters
        ----------
        h
            Hidden state from :meth:`hidden_state` (N x hidden).
        target
            A :class:`ZINBTarget` (prepare it once), or a dense tensor (prepared on each call).
        size_factors
            Per-spot factors, mode ``"counts"`` only.
        ridge, eps
            As in :func:`zinb_nll`.
        chunk_rows
            Rows per chunk of the head products (default: about 2^20 entries of the N x M matrix per chunk
            on CPU with one thread, 2^22 with several, 2^24 on GPU). On CPU the element-wise part then
            runs on blocks of about 2^19 entries inside each chunk.
        matmul_dtype
            None: the head products in the dtype of ``h``. ``torch.bfloat16``: their operands are rounded
            to bfloat16 and they accumulate in float32 (mixed precision); the loss itself stays float32.
        """
        if not isinstance(target, ZINBTarget):
            target = ZINBTarget(target, device=h.device, dtype=h.dtype)
        n, m = target.shape
        if h.shape[0] != n or m != self.n_genes:
            raise ValueError(
                f"target shape {target.shape} does not match {h.shape[0]} spots x {self.n_genes} genes."
            )
        if target.device != h.device:
            target.to(h.device)
        size_factors = self._check_size_factors(size_factors, n)
        if size_factors is not None:
            size_factors = size_factors.to(h.dtype).contiguous()
        chunk = int(chunk_rows) if chunk_rows else _pick_chunk_rows(n, m, h.device)
        with_grad = torch.is_grad_enabled() and (
            h.requires_grad or self.heads.weight.requires_grad or self.heads.bias.requires_grad
        )
        return _FusedZINBLoss.apply(
            h.contiguous(),
            self.heads.weight,
            self.heads.bias,
            size_factors,
            target,
            float(ridge),
            float(eps),
            chunk,
            self._workspace,
            with_grad,
            matmul_dtype,
        )

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
