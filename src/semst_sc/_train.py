"""Training loop for :class:`~semst_sc.nn.SemSTModule`: device, seeding, schedule, progress, history.

Arrays in (scipy / numpy, see :class:`TrainInputs`), tensors only inside; no AnnData here.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ._constants import Default
from ._utils import check_ema_decay, check_zinb_fraction
from ._validation import check_seed
from .nn import SemSTModule, ZINBTarget, edge_index, normalize_adjacency, scipy_to_torch_csr
from .nn._losses import SPATIAL_WEIGHTINGS

__all__ = [
    "EARLY_STOPPING_DEFAULTS",
    "TrainInputs",
    "embed",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "train",
]

#: options of the label-free early stopping (``train(..., early_stopping=True | {...})``)
EARLY_STOPPING_DEFAULTS: dict[str, float] = {"patience": 20, "tol": 1e-3, "min_epochs": 30, "smoothing": 0.9}

#: a sparse ``x`` below this density is kept sparse for ``x @ W``; above it, and if the dense copy fits in
#: :data:`DENSE_X_MAX_BYTES`, it is densified (measured on DLPFC, 19 % non-zero: the dense product with
#: its backward is faster than torch's CSR kernel on CPU; see benchmarks/epoch_speed.py)
SPARSE_X_MAX_DENSITY = 0.10
DENSE_X_MAX_BYTES = 2 * 2**30

#: value of ``torch.utils.deterministic.fill_uninitialized_memory`` during a deterministic (CPU) run; the
#: tests set it to True to check that nothing in training reads memory it has not written
FILL_UNINITIALIZED_MEMORY = False


# -- device and seeds -----------------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn a user's ``device`` into a usable :class:`torch.device`.

    Parameters
    ----------
    device
        None: CUDA when available, else CPU. Otherwise ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a
        :class:`torch.device`.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        Unknown device string, or a device that this torch build / machine does not have.
    """
    if device is None:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if isinstance(device, str):
        try:
            dev = torch.device(device.strip())
        except RuntimeError as e:
            raise ValueError(
                f"Unknown device {device!r}: use None (automatic), 'cpu', 'cuda', 'cuda:<index>' or 'mps'."
            ) from e
    elif isinstance(device, torch.device):
        dev = device
    else:
        raise TypeError(f"`device` must be None, a string or a torch.device, got {type(device).__name__}.")
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "CUDA was requested but torch.cuda.is_available() is False: install a CUDA build of torch "
                "or pass device='cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"CUDA device {dev.index} was requested but only {torch.cuda.device_count()} "
                "device(s) are visible: pass device='cuda' or a valid index."
            )
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(
                "MPS was requested but torch.backends.mps.is_available() is False (Apple GPUs only): "
                "pass device='cpu'."
            )
        return dev
    raise ValueError(f"Unsupported device {device!r}: use None, 'cpu', 'cuda', 'cuda:<index>' or 'mps'.")


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device).

    Deterministic algorithms are switched on by :func:`train` for the duration of a CPU run (and restored
    afterwards), not here, so that seeding has no lasting global side effect beyond the seeds.
    """
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global generator is what other libraries draw from
    torch.manual_seed(seed)  # also seeds every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Temporarily enable torch's deterministic algorithms (restoring the previous settings).

    torch's companion setting ``torch.utils.deterministic.fill_uninitialized_memory`` is switched off for
    the same time: it fills every newly allocated tensor with NaN, a debugging aid that makes a read of
    uninitialised memory visible, and that cost a quarter of an osmFISH epoch (mostly first-touch page
    faults of the spatial loss's 16 MB temporaries). The results are the same bit for bit: the training
    code reads no memory it has not written (tested with :data:`FILL_UNINITIALIZED_MEMORY` set to True).
    """
    if not enabled:
        yield
        return
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    inductor = sys.modules.get("torch._inductor.config")
    prev_inductor = getattr(inductor, "deterministic", None)
    _set_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = FILL_UNINITIALIZED_MEMORY
    try:
        yield
    finally:
        _set_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill
        if inductor is not None and prev_inductor is not None:
            inductor.deterministic = prev_inductor


def _set_deterministic_algorithms(mode: bool, *, warn_only: bool) -> None:
    """:func:`torch.use_deterministic_algorithms`, without importing torch's compiler to do it.

    In torch 2.13 the public function also sets ``torch._inductor.config.deterministic``, and importing
    that module loads the inductor and ``torch._dynamo``: 1.3-1.5 s on this project's CPUs, paid by the
    first training of every process (a twentieth of a small panel's call). That setting concerns code the
    inductor compiles, and training compiles nothing, so where the inductor is not loaded only torch's own
    flag is set, as ``torch.set_deterministic_debug_mode`` does; where it is loaded (the user compiles
    something) the public function runs, and :func:`_deterministic` puts its setting back afterwards.
    """
    set_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_flag is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        set_flag(mode, warn_only=warn_only)


class _CPUAdam:
    """Adam with L2 weight decay, step for step what ``torch.optim.Adam`` computes on the CPU.

    ``torch.optim.Adam`` wraps its methods for ``torch.compile``, and the first call imports
    ``torch._dynamo`` to do so: 1.2-1.5 s on this project's CPUs, paid by the first training of every
    process (every ``semst domains`` on the command line). On the CPU torch runs its single-tensor update,
    parameter by parameter; this class performs the same operations in the same order (the tests check
    the parameters bit for bit against ``torch.optim.Adam``), without the wrappers. :func:`optimizer`
    uses torch's own on other devices, where its multi-tensor kernels are faster.
    """

    def __init__(self, params, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.eps = float(lr), float(weight_decay), float(eps)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.steps = [0] * len(self.params)  # per parameter, as torch counts them
        self.moments: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.beta1, self.beta2
        for i, param in enumerate(self.params):
            if param.grad is None:  # as torch: a parameter without a gradient is left as it is
                continue
            if i not in self.moments:
                zeros = torch.zeros_like(param, memory_format=torch.preserve_format)
                self.moments[i] = (zeros, zeros.clone())
            exp_avg, exp_avg_sq = self.moments[i]
            self.steps[i] += 1
            step = float(self.steps[i])  # torch keeps the count as a float
            grad = param.grad
            if self.weight_decay != 0:
                grad = grad.add(param, alpha=self.weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = self.lr / (1 - beta1**step)
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)


def optimizer(params, device: torch.device, lr: float, weight_decay: float):
    """Adam for training on ``device``: :class:`_CPUAdam` on the CPU, ``torch.optim.Adam`` elsewhere."""
    if device.type == "cpu":
        return _CPUAdam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


# -- inputs ---------------------------------------------------------------------------------------------
@dataclass
class TrainInputs:
    """Everything the training loop reads, as scipy / numpy objects (AnnData-free).

    Attributes
    ----------
    x
        Model input (N x M): the preprocessed expression, scipy sparse or numpy.
    adj_spa, adj_fea
        Spatial and feature graphs (N x N scipy sparse; binarised and normalised by :func:`train`).
    target
        ZINB target (N x M): the same scaled matrix as ``x`` in the faithful mode, raw counts of the same
        genes in the counts mode. scipy sparse or numpy, non-negative.
    spatial_edges
        Neighbour pairs for the spatial loss: a scipy sparse adjacency (self-loops dropped) or a tuple
        ``(rows, cols)`` of integer arrays.
    h_llm
        Language-model embedding (N x L) or None.
    size_factors
        Per-spot size factors (N,) for the counts mode, else None.
    """

    x: Any
    adj_spa: Any
    adj_fea: Any
    target: Any
    spatial_edges: Any
    h_llm: Any = None
    size_factors: Any = None

    @property
    def n_obs(self) -> int:
        """Number of spots."""
        return int(self.x.shape[0])

    def validate(self, module: SemSTModule | None = None) -> None:
        """Raise a clear error if shapes, types or values do not fit together (or do not fit ``module``)."""
        if not (sp.issparse(self.x) or isinstance(self.x, np.ndarray)) or self.x.ndim != 2:
            raise TypeError(
                f"`x` must be a 2-D scipy sparse matrix or numpy array, got {type(self.x).__name__}."
            )
        n, m = self.x.shape
        if not np.issubdtype(self.x.dtype, np.floating) and not np.issubdtype(self.x.dtype, np.integer):
            raise TypeError(f"`x` must be numeric, got dtype {self.x.dtype}.")
        xdata = self.x.data if sp.issparse(self.x) else self.x
        if not np.all(np.isfinite(xdata)):
            raise ValueError("`x` contains NaN or infinite values.")
        for name in ("adj_spa", "adj_fea"):
            a = getattr(self, name)
            if not sp.issparse(a):
                raise TypeError(f"`{name}` must be a scipy sparse matrix, got {type(a).__name__}.")
            if a.shape != (n, n):
                raise ValueError(f"`{name}` must be ({n} x {n}) to match `x`, got {a.shape}.")
        if not (sp.issparse(self.target) or isinstance(self.target, np.ndarray)):
            raise TypeError(
                f"`target` must be a scipy sparse matrix or numpy array, got {type(self.target).__name__}."
            )
        if self.target.shape != (n, m):
            raise ValueError(f"`target` must have the shape of `x` ({n} x {m}), got {self.target.shape}.")
        if sp.issparse(self.spatial_edges):
            if self.spatial_edges.shape != (n, n):
                raise ValueError(f"`spatial_edges` must be ({n} x {n}), got {self.spatial_edges.shape}.")
        elif isinstance(self.spatial_edges, tuple | list) and len(self.spatial_edges) == 2:
            r, c = (np.asarray(v) for v in self.spatial_edges)
            if r.shape != c.shape or r.ndim != 1 or not np.issubdtype(r.dtype, np.integer):
                raise ValueError(
                    "`spatial_edges` (rows, cols) must be two 1-D integer arrays of equal length."
                )
            if r.size and (min(r.min(), c.min()) < 0 or max(r.max(), c.max()) >= n):
                raise ValueError(f"`spatial_edges` indices must lie in [0, {n}).")
        else:
            raise TypeError(
                "`spatial_edges` must be a scipy sparse adjacency or a (rows, cols) pair of arrays."
            )
        if self.h_llm is not None:
            h = np.asarray(self.h_llm)
            if h.ndim != 2 or h.shape[0] != n:
                raise ValueError(f"`h_llm` must be ({n} x L), one row per spot, got shape {h.shape}.")
            if not np.issubdtype(h.dtype, np.number) or not np.all(np.isfinite(h)):
                raise ValueError("`h_llm` must be numeric without NaN or infinite values.")
        if self.size_factors is not None:
            s = np.asarray(self.size_factors, dtype=np.float64).reshape(-1)
            if s.shape[0] != n or not np.all(np.isfinite(s)) or np.any(s <= 0):
                raise ValueError(f"`size_factors` must be {n} positive finite numbers.")
        if module is None:
            return
        if m != module.n_genes:
            raise ValueError(f"`x` has {m} genes but the module was built for {module.n_genes}.")
        if module.uses_llm:
            if self.h_llm is None:
                raise ValueError(
                    f"fusion {module.fusion_name!r} needs `h_llm`; pass it or use fusion='none'."
                )
            if np.asarray(self.h_llm).shape[1] != module.llm_dim:
                raise ValueError(
                    f"`h_llm` has width {np.asarray(self.h_llm).shape[1]} but the module expects {module.llm_dim}."
                )
        if module.decoder_mode == "counts" and self.size_factors is None:
            raise ValueError("decoder 'counts' needs `size_factors`.")
        if module.decoder_mode == "faithful" and self.size_factors is not None:
            raise ValueError("`size_factors` are only used with decoder 'counts'; pass None.")


@dataclass
class _DeviceInputs:
    x: torch.Tensor
    adj_spa: torch.Tensor
    adj_fea: torch.Tensor
    target: ZINBTarget | None
    rows: torch.Tensor
    cols: torch.Tensor
    h_llm: torch.Tensor | None
    size_factors: torch.Tensor | None
    x_propagated: tuple[torch.Tensor, torch.Tensor] | None = None


def _x_to_torch(x, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    n, m = x.shape
    if sp.issparse(x):
        density = x.nnz / max(n * m, 1)
        if density <= SPARSE_X_MAX_DENSITY or n * m * 4 > DENSE_X_MAX_BYTES:
            return scipy_to_torch_csr(x, dtype=dtype).to(device)
        return torch.from_numpy(np.asarray(x.toarray(), dtype=np.float32)).to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device, dtype=dtype)


def _prepare(
    inputs: TrainInputs, module: SemSTModule, device: torch.device, *, with_target: bool
) -> _DeviceInputs:
    dtype = torch.float32
    adj_spa = normalize_adjacency(inputs.adj_spa, norm=module.gcn_norm, dtype=dtype).to(device)
    adj_fea = normalize_adjacency(inputs.adj_fea, norm=module.gcn_norm, dtype=dtype).to(device)
    if sp.issparse(inputs.spatial_edges):
        rows, cols = edge_index(inputs.spatial_edges)
    else:
        rows, cols = (torch.as_tensor(np.asarray(v, dtype=np.int64)) for v in inputs.spatial_edges)
    h = None
    if module.uses_llm:
        h = torch.as_tensor(np.asarray(inputs.h_llm, dtype=np.float32), device=device)
    sf = None
    if inputs.size_factors is not None:
        sf = torch.as_tensor(np.asarray(inputs.size_factors, dtype=np.float32).reshape(-1), device=device)
    target = ZINBTarget(inputs.target, device=device, dtype=dtype) if with_target else None
    x = _x_to_torch(inputs.x, device, dtype)
    # adj @ x once, where the panel is narrow enough (SemSTModule.propagate_input): the first GCN layers
    # then skip a sparse product per forward and backward
    x_prop = module.propagate_input(x, adj_spa, adj_fea)
    low = module._matmul_dtype
    if low is not None and x.layout == torch.strided:
        # the input is constant: round it once here rather than in SemSTModule.encode at every epoch
        x = x.to(low)
    if low is not None and x_prop is not None:
        x_prop = (x_prop[0].to(low), x_prop[1].to(low))
    return _DeviceInputs(
        x,
        adj_spa,
        adj_fea,
        target,
        rows.to(device),
        cols.to(device),
        h,
        sf,
        x_prop,
    )


class _WeightAverage:
    """Exponentially weighted mean of a module's weights over the epochs, bias-corrected.

    After epoch t the average is ``sum_s (1 - d) d^(t-s) w_s / (1 - d^t)`` over the weights ``w_1..w_t``
    reached so far, so the random initial weights take no part. It is kept in that normalised form, updated
    as ``avg += (w_t - avg) (1 - d) / (1 - d^t)`` (the first update copies ``w_1``). Floating-point
    parameters and buffers (e.g. batch-norm statistics) are averaged; integer buffers follow the module.
    """

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay, self.t = float(decay), 0
        self.live = [v for v in module.state_dict().values() if v.dtype.is_floating_point]
        self.avg = [v.detach().clone() for v in self.live]

    @torch.no_grad()
    def update(self) -> None:
        self.t += 1
        weight = (1.0 - self.decay) / (1.0 - self.decay**self.t)
        for avg, live in zip(self.avg, self.live, strict=True):
            avg.lerp_(live, weight)

    @torch.no_grad()
    def copy_to_module(self) -> None:
        """Write the average into the module's own tensors (the last epoch's weights are discarded)."""
        for avg, live in zip(self.avg, self.live, strict=True):
            live.copy_(avg)


def _zinb_blocks(
    inputs: TrainInputs, fraction: float, seed: int, device: torch.device
) -> list[tuple[torch.Tensor, ZINBTarget]] | None:
    """The ZINB loss's blocks of spots when ``fraction < 1``: ``(spot indices, their target rows)``.

    The spots are split once, at random (from ``seed``), into ``ceil(1 / fraction)`` blocks of nearly equal
    size; epoch ``e`` reconstructs block ``e mod n_blocks``, so every spot is reconstructed equally often.
    The blocks' targets together hold exactly the non-zeros of the whole target (no extra memory).
    """
    if fraction >= 1.0:
        return None
    n_blocks = min(inputs.n_obs, math.ceil(1.0 / fraction))
    order = np.random.default_rng(seed).permutation(inputs.n_obs)
    target = sp.csr_matrix(inputs.target) if sp.issparse(inputs.target) else np.asarray(inputs.target)
    blocks = []
    for part in np.array_split(order, n_blocks):
        part = np.sort(part)
        blocks.append((torch.as_tensor(part, device=device), ZINBTarget(target[part], device=device)))
    return blocks


# -- early stopping -------------------------------------------------------------------------------------
def _early_stopping_options(early_stopping: bool | dict) -> dict[str, float] | None:
    if early_stopping is False or early_stopping is None:
        return None
    if early_stopping is True:
        return dict(EARLY_STOPPING_DEFAULTS)
    if not isinstance(early_stopping, dict):
        raise TypeError(f"`early_stopping` must be a bool or a dict, got {type(early_stopping).__name__}.")
    unknown = set(early_stopping) - set(EARLY_STOPPING_DEFAULTS)
    if unknown:
        raise ValueError(
            f"Unknown early_stopping option(s) {sorted(unknown)}; valid: {sorted(EARLY_STOPPING_DEFAULTS)}."
        )
    opts = {**EARLY_STOPPING_DEFAULTS, **early_stopping}
    if int(opts["patience"]) < 1 or int(opts["min_epochs"]) < 0 or float(opts["tol"]) < 0:
        raise ValueError("early_stopping: `patience` must be >= 1, `min_epochs` >= 0 and `tol` >= 0.")
    if not 0.0 <= float(opts["smoothing"]) < 1.0:
        raise ValueError("early_stopping: `smoothing` must be in [0, 1).")
    return opts


class _Plateau:
    """Label-free stopping rule on the total loss.

    The loss is smoothed by an exponential moving average ``s_t = a s_{t-1} + (1 - a) L_t``
    (``a = smoothing``). After ``min_epochs`` epochs, training stops at the first epoch t where the
    relative improvement over the last ``patience`` epochs, ``(s_{t-patience} - s_t) / |s_{t-patience}|``,
    is below ``tol``.
    """

    def __init__(self, opts: dict[str, float]) -> None:
        self.patience, self.tol = int(opts["patience"]), float(opts["tol"])
        self.min_epochs, self.a = int(opts["min_epochs"]), float(opts["smoothing"])
        self.smoothed: list[float] = []

    def update(self, loss: float) -> bool:
        s = loss if not self.smoothed else self.a * self.smoothed[-1] + (1.0 - self.a) * loss
        self.smoothed.append(s)
        t = len(self.smoothed)
        if t < max(self.min_epochs, self.patience + 1):
            return False
        ref = self.smoothed[-1 - self.patience]
        return (ref - s) / max(abs(ref), 1e-12) < self.tol


# -- training -------------------------------------------------------------------------------------------
def train(
    module: SemSTModule,
    inputs: TrainInputs,
    *,
    n_epochs: int = Default.n_epochs,
    lr: float = Default.lr,
    weight_decay: float = Default.weight_decay,
    gamma: float = Default.gamma,
    lambda_s: float = Default.lambda_s,
    device: str | torch.device | None = None,
    seed: int = Default.seed,
    progress: bool = True,
    early_stopping: bool | dict = False,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
    n_negatives: int | None = 10,
    spatial_weighting: str = "reference",
    ridge: float = 0.05,
    zinb_fraction: float = Default.zinb_fraction,
    ema_decay: float = Default.ema_decay,
) -> dict[str, Any]:
    """Train ``module`` on full-graph inputs with Adam, one step per epoch, label-free.

    Parameters
    ----------
    module
        The network. Its initial weights come from the torch seed at construction time: call
        :func:`seed_everything` before building it for an end-to-end reproducible run.
    inputs
        Arrays, see :class:`TrainInputs`; moved to ``device`` here (a sparse ``x`` stays sparse when it is
        at most 10 % non-zero or its dense copy would exceed 2 GiB).
    n_epochs
        Maximum number of epochs (steps).
    lr, weight_decay
        Adam settings (1e-3 and 5e-4 in the reference).
    gamma, lambda_s
        Loss weights of correlation reduction and spatial regularisation.
    device
        None (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ...; see :func:`resolve_device`.
    seed
        Seeds python, numpy and torch at the start of training, and the generator of the negative pairs.
        On CPU the same seed (and module initialisation) gives a bitwise identical result.
    progress
        Show a tqdm bar with the current loss.
    early_stopping
        False (fixed schedule), True (defaults :data:`EARLY_STOPPING_DEFAULTS`) or a dict overriding some of
        ``patience``, ``tol``, ``min_epochs``, ``smoothing``. The rule looks only at the training loss: stop
        when the relative improvement of the exponentially smoothed total loss over the last ``patience``
        epochs falls below ``tol`` (after at least ``min_epochs`` epochs). Labels are never looked at.
    callback
        Called after every epoch as ``callback(epoch, losses)`` with the dict of float losses; returning
        True stops training.
    n_negatives, spatial_weighting
        Negative pairs per spot and scaling of the spatial loss (see
        :func:`~semst_sc.nn.spatial_regularization_loss`).
    ridge
        Ridge weight on ``pi^2`` in the ZINB loss.
    zinb_fraction
        Share of the spots whose expression the ZINB loss reconstructs at each epoch, in (0, 1]. 1 (the
        paper): all of them. Below 1 the spots are split once at random into ``ceil(1 / zinb_fraction)``
        blocks and the epochs take the blocks in turn: the encoder, the graphs and the other two losses
        still see every spot at every epoch, while the decoder heads and the element-wise loss, most of an
        epoch's cost, run on one block. The block's loss is an unbiased estimate of the full mean, and
        the recorded ``zinb`` values are those estimates.
    ema_decay
        In [0, 1). Above 0 the module ends with an exponentially weighted mean of its weights over the
        epochs (bias-corrected, so only trained weights count; a window of about ``1 / (1 - ema_decay)``
        epochs) instead of the last epoch's weights. The recorded losses are those of the weights being
        trained. 0: the last epoch's weights.

    Returns
    -------
    dict
        ``loss``, ``zinb``, ``cr``, ``spatial``, ``seconds`` (float arrays, one value per epoch run),
        ``stopped_epoch`` (int, number of epochs run) and ``early_stopped`` (bool).

    Raises
    ------
    FloatingPointError
        If the loss becomes NaN or infinite (try a lower ``lr``).
    """
    if not isinstance(module, SemSTModule):
        raise TypeError(f"`module` must be a SemSTModule, got {type(module).__name__}.")
    if not isinstance(inputs, TrainInputs):
        raise TypeError(f"`inputs` must be a TrainInputs, got {type(inputs).__name__}.")
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int | np.integer) or n_epochs < 1:
        raise ValueError(f"`n_epochs` must be a positive integer, got {n_epochs!r}.")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be a positive number, got {lr!r}.")
    for name, v in (
        ("weight_decay", weight_decay),
        ("gamma", gamma),
        ("lambda_s", lambda_s),
        ("ridge", ridge),
    ):
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"`{name}` must be a non-negative number, got {v!r}.")
    if spatial_weighting not in SPATIAL_WEIGHTINGS:
        raise ValueError(
            f"Unknown `spatial_weighting` {spatial_weighting!r}; valid: {', '.join(map(repr, SPATIAL_WEIGHTINGS))}."
        )
    check_zinb_fraction(zinb_fraction)
    ema_decay = check_ema_decay(ema_decay)
    stop_opts = _early_stopping_options(early_stopping)
    inputs.validate(module)
    dev = resolve_device(device)
    seed_everything(seed)
    gen = torch.Generator().manual_seed(int(seed))

    with _deterministic(dev.type == "cpu"):
        module.to(dev)
        blocks = _zinb_blocks(inputs, zinb_fraction, seed, dev)
        data = _prepare(inputs, module, dev, with_target=blocks is None)  # the blocks hold the target
        opt = optimizer(module.parameters(), dev, lr=lr, weight_decay=weight_decay)
        keys = ("loss", "zinb", "cr", "spatial")
        hist: dict[str, list[float]] = {k: [] for k in (*keys, "seconds")}
        plateau = _Plateau(stop_opts) if stop_opts else None
        average = _WeightAverage(module, ema_decay) if ema_decay > 0 else None
        early = False
        module.train()
        bar = tqdm(range(int(n_epochs)), desc="SemST", unit="epoch", disable=not progress, leave=False)
        try:
            for epoch in bar:
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                out = module(
                    data.x,
                    data.adj_spa,
                    data.adj_fea,
                    data.h_llm,
                    data.size_factors,
                    decode=False,
                    x_propagated=data.x_propagated,
                )
                block_idx, block_target = blocks[epoch % len(blocks)] if blocks else (None, data.target)
                total, parts = module.loss(
                    out,
                    block_target,
                    (data.rows, data.cols),
                    gamma,
                    lambda_s,
                    ridge=ridge,
                    n_negatives=n_negatives,
                    generator=gen,
                    spatial_weighting=spatial_weighting,
                    zinb_index=block_idx,
                )
                if not math.isfinite(parts["loss"]):
                    raise FloatingPointError(
                        f"SemST training diverged at epoch {epoch + 1}: the loss is {parts['loss']} "
                        f"(zinb={parts['zinb']}, cr={parts['cr']}, spatial={parts['spatial']}). "
                        f"Try a lower learning rate than lr={lr}."
                    )
                total.backward()
                opt.step()
                if average is not None:
                    average.update()
                for k in keys:
                    hist[k].append(parts[k])
                hist["seconds"].append(time.perf_counter() - t0)
                bar.set_postfix(loss=f"{parts['loss']:.4f}", refresh=False)
                if plateau is not None and plateau.update(parts["loss"]):
                    early = True
                    break
                if callback is not None and callback(epoch, dict(parts)):
                    break
        finally:
            bar.close()
            module.decoder._workspace.clear()
        if average is not None:
            average.copy_to_module()
    out_hist: dict[str, Any] = {k: np.asarray(v, dtype=np.float64) for k, v in hist.items()}
    out_hist["stopped_epoch"] = len(hist["loss"])
    out_hist["early_stopped"] = early
    return out_hist


@torch.no_grad()
def embed(module: SemSTModule, inputs: TrainInputs, device: str | torch.device | None = None) -> np.ndarray:
    """The embedding ``Z_final`` (N x latent, float32 numpy) in eval mode, without gradients.

    The module's train/eval mode is restored afterwards; the module stays on ``device``.
    """
    if not isinstance(module, SemSTModule):
        raise TypeError(f"`module` must be a SemSTModule, got {type(module).__name__}.")
    inputs.validate(module)
    dev = resolve_device(device)
    was_training = module.training
    module.to(dev)
    data = _prepare(inputs, module, dev, with_target=False)
    module.eval()
    try:
        z, _, _ = module.encode(
            data.x, data.adj_spa, data.adj_fea, data.h_llm, x_propagated=data.x_propagated
        )
    finally:
        module.train(was_training)
    return z.detach().cpu().numpy().astype(np.float32, copy=False)


# -- checkpoints ----------------------------------------------------------------------------------------
def save_checkpoint(
    path: str | Path, module: SemSTModule, *, history: dict | None = None, extra: dict | None = None
) -> Path:
    """Save the module's architecture, weights, and optionally its history and extra metadata.

    The file loads with ``torch.load(weights_only=True)``: numpy arrays are stored as lists.
    """
    path = Path(path)
    payload = {
        "format": "semst-sc/module/1",
        "config": module.config,
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "history": _plain(history or {}),
        "extra": _plain(extra or {}),
    }
    torch.save(payload, path)
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[SemSTModule, dict, dict]:
    """Rebuild a module saved by :func:`save_checkpoint`: returns ``(module, history, extra)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != "semst-sc/module/1":
        raise ValueError(f"{path} is not a semst-sc module checkpoint.")
    module = SemSTModule.from_config(payload["config"])
    module.load_state_dict(payload["state_dict"])
    hist = {k: np.asarray(v) if isinstance(v, list) else v for k, v in payload["history"].items()}
    return module, hist, payload["extra"]


def _plain(d: dict) -> dict:
    """numpy values -> python lists / scalars (safe for ``torch.load(weights_only=True)``)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            out[k] = v.tolist()
        elif isinstance(v, np.generic):
            out[k] = v.item()
        elif isinstance(v, dict):
            out[k] = _plain(v)
        else:
            out[k] = v
    return out
