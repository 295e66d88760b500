"""Optional DGL backend for the graph convolutions (``backend="dgl"``).

The default engine is plain ``torch.sparse`` (:class:`~semst_sc.nn.GCNLayer`). This module runs the same
propagation through DGL's message passing (:class:`dgl.nn.GraphConv`), held to the same numbers by the
parity tests in ``tests/test_dgl_backend.py``. DGL is never imported at module import time: the check in
:func:`require_dgl` runs first, so an unusable DGL gives an ImportError that says how to fix it instead
of a crash inside DGL.

Why a check before the import: DGL 2.1.0, the newest DGL on PyPI, ships its compiled graphbolt library
only for torch 2.0.0 - 2.2.1 (one file per torch release, ``dgl/graphbolt/libgraphbolt_pytorch_<v>.so``)
and fails to import beside any other torch. The check reads that file list of the installed DGL, so it
also holds for other DGL releases.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._constants import GCN_NORMS
from ._gcn import GCNLayer
from ._graph import _check_square_sparse

__all__ = [
    "DGL_LOCK_FILE",
    "DGL_TORCH_WINDOW",
    "DGLGCNLayer",
    "check_dgl_device",
    "dgl_problem",
    "require_dgl",
    "to_dgl_graph",
    "use_dgl",
]

#: torch releases DGL 2.1.0 (the newest DGL on PyPI) ships compiled libraries for.
DGL_TORCH_WINDOW = ("2.0.0", "2.2.1")
#: The pinned, tested environment for the DGL backend (path inside the semst-sc source repository).
DGL_LOCK_FILE = "requirements/dgl.lock"
#: Modules DGL 2.x imports at ``import dgl`` (graphbolt) without declaring all of them as dependencies.
_DGL_RUNTIME_MODULES = ("torchdata", "pydantic", "yaml")
#: Edge-data field holding the normalised edge weights of graphs made by this module.
EDGE_WEIGHT = "semst_w"

_INSTALL_ADVICE = (
    "The DGL backend is optional: backend='torch' (the default) computes the same graph convolutions with "
    "plain torch.sparse and needs nothing else. To use DGL, make an environment with torch "
    f"{DGL_TORCH_WINDOW[0]} - {DGL_TORCH_WINDOW[1]} (DGL 2.1.0, the newest DGL on PyPI, ships compiled parts "
    "for these torch releases only), e.g. "
    f"pip install 'semst-sc[dgl]' 'torch>={DGL_TORCH_WINDOW[0]},<={DGL_TORCH_WINDOW[1]}' 'numpy<2', "
    f"or install the tested pins: uv pip sync {DGL_LOCK_FILE} (in the semst-sc source repository) and then "
    "pip install --no-deps semst-sc. See docs/backends.md."
)


def _base_version(version: str) -> str:
    """'2.2.1+cu121' -> '2.2.1'."""
    return version.split("+", 1)[0].strip()


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", _base_version(version))[:3])


def _graphbolt_torch_versions(dgl_dir: Path) -> list[str] | None:
    """torch releases the DGL installed at ``dgl_dir`` has a compiled graphbolt library for.

    None when that DGL has no graphbolt folder (DGL < 2.0 loads beside any torch, with a warning).
    """
    folder = dgl_dir / "graphbolt"
    if not folder.is_dir():
        return None
    if sys.platform.startswith("win"):
        pattern = re.compile(r"^graphbolt_pytorch_(.+)\.dll$")
    elif sys.platform.startswith("darwin"):
        pattern = re.compile(r"^libgraphbolt_pytorch_(.+)\.dylib$")
    else:
        pattern = re.compile(r"^libgraphbolt_pytorch_(.+)\.so$")
    found = [m.group(1) for m in (pattern.match(p.name) for p in folder.iterdir()) if m]
    return sorted(found, key=_version_tuple)


def _installed_dgl() -> tuple[Path | None, str | None]:
    """(package folder, version) of the installed DGL, found without importing it."""
    spec = importlib.util.find_spec("dgl")
    if spec is None or not spec.submodule_search_locations:
        return None, None
    try:
        version = importlib.metadata.version("dgl")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return Path(next(iter(spec.submodule_search_locations))), version


_AUTO: Any = object()


def dgl_problem(*, torch_version: str | None = None, dgl_dir: Path | str | None = _AUTO) -> str | None:
    """Why DGL cannot be imported beside this torch, found without importing DGL; None when it can.

    Parameters
    ----------
    torch_version
        The torch release to check against; defaults to the running ``torch.__version__``.
    dgl_dir
        Folder of the installed ``dgl`` package; defaults to the one this interpreter would import,
        ``None`` means DGL is not installed.

    Returns
    -------
    str or None
        A sentence naming every problem found, or None.
    """
    torch_version = _base_version(torch_version or torch.__version__)
    if dgl_dir is _AUTO:
        dgl_dir, dgl_version = _installed_dgl()
    else:
        dgl_version = None
    problems = []
    if dgl_dir is None:
        problems.append("DGL is not installed in this environment")
        low, high = (_version_tuple(v) for v in DGL_TORCH_WINDOW)
        if not low <= _version_tuple(torch_version) <= high:
            problems.append(
                f"this environment's torch {torch_version} is outside the window of DGL 2.1.0, the newest DGL "
                f"on PyPI (torch {DGL_TORCH_WINDOW[0]} - {DGL_TORCH_WINDOW[1]}), so installing DGL here "
                "would not help"
            )
    else:
        dgl_dir = Path(dgl_dir)
        label = f"DGL {dgl_version}" if dgl_version else f"DGL at {dgl_dir}"
        supported = _graphbolt_torch_versions(dgl_dir)
        if supported is not None and torch_version not in supported:
            window = f"{supported[0]} - {supported[-1]}" if supported else "no torch release"
            problems.append(
                f"{label} ships compiled libraries for torch {window} only ({', '.join(supported)}), "
                f"but this environment runs torch {torch_version}: `import dgl` would fail"
            )
        if supported is not None:
            missing = [m for m in _DGL_RUNTIME_MODULES if importlib.util.find_spec(m) is None]
            if missing:
                problems.append(
                    f"{label} imports {', '.join(missing)} at start-up, which "
                    f"{'is' if len(missing) == 1 else 'are'} not installed "
                    "(pip install torchdata==0.7.1 pydantic pyyaml)"
                )
    backend = os.environ.get("DGLBACKEND")
    if backend is not None and backend != "pytorch":
        problems.append(
            f"the environment variable DGLBACKEND={backend!r} selects another DGL backend than 'pytorch' "
            "(unset it or set DGLBACKEND=pytorch)"
        )
    return "; ".join(problems) if problems else None


def require_dgl():
    """Import DGL for the ``backend="dgl"`` graph convolutions, or raise an ImportError saying how to fix it.

    The torch release, DGL's compiled libraries and DGL's undeclared start-up imports are checked
    *before* DGL is imported (see :func:`dgl_problem`), so a mismatch never crashes inside DGL.

    Returns
    -------
    module
        The imported ``dgl`` package.

    Raises
    ------
    ImportError
        DGL is not installed, cannot be loaded beside the running torch, or fails to import.
    """
    if "dgl" in sys.modules and getattr(sys.modules["dgl"], "__version__", None):
        return sys.modules["dgl"]
    problem = dgl_problem()
    if problem is not None:
        raise ImportError(f"backend='dgl' is not available: {problem}. {_INSTALL_ADVICE}")
    # Without DGLBACKEND, DGL prints a notice and writes ~/.dgl/config.json on first import.
    os.environ.setdefault("DGLBACKEND", "pytorch")
    try:
        import dgl
    except Exception as err:  # DGL raises FileNotFoundError / OSError / ImportError from its loaders
        raise ImportError(
            f"backend='dgl' is not available: `import dgl` failed ({type(err).__name__}: {err}). {_INSTALL_ADVICE}"
        ) from err
    return dgl


def check_dgl_device(device: torch.device | str) -> None:
    """Raise before any work when the installed DGL cannot run on ``device``.

    DGL's wheels on PyPI are CPU-only, while the torch 2.2.1 wheel beside them is a CUDA build: on a GPU
    machine ``device=None`` resolves to CUDA, where DGL would fail at the first graph operation. The check
    builds a one-edge graph on ``device``.

    Parameters
    ----------
    device
        The device training will run on.

    Returns
    -------
    None
        Nothing; the call returns only when DGL works on ``device``.

    Raises
    ------
    ImportError
        DGL cannot be imported (see :func:`require_dgl`).
    RuntimeError
        DGL has no support for ``device``.
    """
    dgl = require_dgl()
    device = torch.device(device)
    if device.type == "cpu":
        return
    try:
        dgl.graph(([0], [0]), num_nodes=1, device=device)
    except Exception as err:  # DGLError, KeyError, RuntimeError depending on the device
        raise RuntimeError(
            f"backend='dgl' cannot run on device {str(device)!r}: the installed DGL {dgl.__version__} does not "
            f"support it ({type(err).__name__}: {err}). DGL's wheels on PyPI are CPU-only: pass device='cpu', "
            "or use backend='torch' (the same results on every device), or install a CUDA build of DGL that "
            "matches this torch (https://www.dgl.ai/pages/start.html)."
        ) from err


def to_dgl_graph(
    adj, norm: str = "row", add_self_loops: bool = True, device: torch.device | str | None = None
):
    r"""A scipy adjacency as a DGL graph whose edge weights are normalised by DGL itself.

    The same recipe as :func:`~semst_sc.nn.normalize_adjacency`, done with DGL's own operations: every
    stored non-zero of ``adj`` becomes an edge of weight 1 (explicit zeros dropped), self loops are
    replaced by exactly one per node when ``add_self_loops`` (:func:`dgl.add_self_loop`), and
    :class:`dgl.nn.EdgeWeightNorm` normalises the weights: ``"row"`` divides by each node's in-degree
    (:math:`\tilde D^{-1} \tilde A`, DGL's ``norm="right"``), ``"sym"`` by the square roots of both
    end-points' degrees (:math:`\tilde D^{-1/2} \tilde A \tilde D^{-1/2}`, DGL's ``norm="both"``).

    Edge ``j -> i`` carries ``adj[i, j]``: node ``i`` aggregates row ``i``, as ``adj @ x`` does.

    Parameters
    ----------
    adj
        Square scipy sparse matrix (N x N); not modified. ``"sym"`` needs a symmetric pattern.
    norm
        ``"row"`` or ``"sym"``.
    add_self_loops
        One self loop per node before normalising.
    device
        Where the graph lives; CPU by default.

    Returns
    -------
    dgl.DGLGraph
        N nodes, the normalised float32 weights in ``g.edata["semst_w"]``.
    """
    if norm not in GCN_NORMS:
        raise ValueError(f"Unknown `norm` {norm!r}; valid choices: {', '.join(map(repr, GCN_NORMS))}.")
    a = _check_square_sparse(adj)
    a.eliminate_zeros()
    if norm == "sym" and (a != a.T).nnz:
        raise ValueError(
            "norm='sym' needs a symmetric adjacency (DGL's symmetric normalisation uses in- and out-degrees, "
            "which differ on a directed graph); symmetrise it first, e.g. adj = adj.maximum(adj.T)."
        )
    dgl = require_dgl()
    from dgl.nn.pytorch import EdgeWeightNorm

    coo = a.tocoo()
    # adj[i, j] is the message j -> i: source = column, destination = row
    g = dgl.graph(
        (torch.from_numpy(coo.col.astype(np.int64)), torch.from_numpy(coo.row.astype(np.int64))),
        num_nodes=a.shape[0],
    )
    if add_self_loops:
        g = dgl.add_self_loop(dgl.remove_self_loop(g))
    ones = torch.ones(g.num_edges(), dtype=torch.float32)
    g.edata[EDGE_WEIGHT] = EdgeWeightNorm(norm="right" if norm == "row" else "both")(g, ones)
    return g.to(device) if device is not None else g


# DGL views of torch sparse adjacencies, made once per tensor and dropped with it (weak reference).
_GRAPHS: dict[int, tuple[weakref.ref, Any]] = {}


def _graph_from_torch(adj: torch.Tensor):
    """A normalised torch sparse (N x N) adjacency as a DGL graph with its values as edge weights."""
    hit = _GRAPHS.get(id(adj))
    if hit is not None and hit[0]() is adj:
        return hit[1]
    dgl = require_dgl()
    csr = adj if adj.layout == torch.sparse_csr else adj.to_sparse_csr()
    indptr = csr.crow_indices().to(torch.int64)
    indices = csr.col_indices().to(torch.int64)
    eids = torch.arange(indices.numel(), dtype=torch.int64, device=indices.device)
    # the CSR of adj (rows = destinations) is the CSC of DGL's src x dst adjacency
    g = dgl.graph(("csc", (indptr, indices, eids)), num_nodes=adj.shape[0])
    g.edata[EDGE_WEIGHT] = csr.values()
    g.create_formats_()
    _GRAPHS[id(adj)] = (weakref.ref(adj), g)
    weakref.finalize(adj, _GRAPHS.pop, id(adj), None)
    return g


class DGLGCNLayer(GCNLayer):
    r"""One graph convolution, ``adj @ (x @ W) + b``, with DGL's message passing for the graph step.

    Same parameters (``weight`` of shape (in, out), ``bias``), initialisation, state-dict keys and
    feature transform as :class:`~semst_sc.nn.GCNLayer`, so weights load across the two backends and a
    fixed seed gives the same initial weights on both. Only :meth:`propagate` differs: it runs
    :class:`dgl.nn.GraphConv` (``norm="none"``, weighted messages ``u_mul_e`` summed at each node).

    ``adj`` is either

    - a normalised torch sparse tensor, as :func:`~semst_sc.nn.normalize_adjacency` makes (the torch
      backend's input; converted to a DGL graph once per tensor), or
    - a :class:`dgl.DGLGraph` from :func:`to_dgl_graph` (DGL computes the normalisation).

    Parameters
    ----------
    in_features, out_features
        Widths of the input and output.
    bias
        Add a learnable bias after propagation.

    Raises
    ------
    ImportError
        DGL cannot be used beside this torch (see :func:`require_dgl`).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        require_dgl()
        from dgl.nn.pytorch import GraphConv

        super().__init__(in_features, out_features, bias=bias)
        # parameter-free: W and b are this layer's own (GCNLayer's layout); no extra state-dict entries
        self._conv = GraphConv(
            self.out_features,
            self.out_features,
            norm="none",
            weight=False,
            bias=False,
            allow_zero_in_degree=True,
        )

    def propagate(self, support: torch.Tensor, adj) -> torch.Tensor:
        """The graph step ``adj @ support + b`` through DGL (``support`` = ``x @ W``)."""
        if isinstance(adj, torch.Tensor):
            if adj.layout == torch.strided:
                raise TypeError(
                    "The DGL backend needs a sparse adjacency; got a dense tensor. Use "
                    "semst_sc.nn.normalize_adjacency(...) or to_dgl_graph(...)."
                )
            g = _graph_from_torch(adj)
        else:
            g = adj
        if EDGE_WEIGHT not in g.edata:
            raise KeyError(
                f"The DGL graph has no normalised edge weights in g.edata[{EDGE_WEIGHT!r}]; "
                "build it with semst_sc.nn.to_dgl_graph(adj)."
            )
        if g.device != support.device:
            g = g.to(support.device)
        out = self._conv(g, support, edge_weight=g.edata[EDGE_WEIGHT].to(support.dtype))
        if self.bias is not None:
            out = out + self.bias
        return out


def use_dgl(module: nn.Module) -> nn.Module:
    """Switch every :class:`~semst_sc.nn.GCNLayer` inside ``module`` to DGL message passing, in place.

    Each layer is replaced by a :class:`DGLGCNLayer` holding the *same* parameter objects (an optimiser
    made before or after the switch trains them either way; the state dict is unchanged).

    Parameters
    ----------
    module
        Any torch module, e.g. a :class:`~semst_sc.nn.GCN` or the whole SemST module.

    Returns
    -------
    torch.nn.Module
        ``module`` itself.

    Raises
    ------
    ImportError
        DGL cannot be used beside this torch; ``module`` is left unchanged.
    """
    if type(module) is GCNLayer:
        raise TypeError(
            "use_dgl switches the layers inside a module; for one layer, build a DGLGCNLayer instead."
        )
    require_dgl()
    swaps = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if type(child) is GCNLayer
    ]
    # the new layers' throw-away initialisation must not advance the global RNG (dropout, later inits)
    with torch.random.fork_rng(devices=[]):
        for parent, name, old in swaps:
            new = DGLGCNLayer(old.in_features, old.out_features, bias=old.bias is not None)
            new.weight = old.weight
            new.bias = old.bias
            new.train(old.training)
            setattr(parent, name, new)
    return module
