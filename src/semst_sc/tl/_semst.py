"""The AnnData-facing SemST model: inputs from AnnData, training through ``semst_sc._train``, results back.

Data flow: AnnData -> :class:`Prepared` (scipy / numpy) -> ``semst_sc.nn`` module trained by
``semst_sc._train`` -> numpy -> AnnData. The network knows nothing of AnnData.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from .._constants import BACKENDS, FUSIONS, GCN_NORMS, PRECISIONS, Default, Key
from .._utils import block_rows, row_blocks, user_stacklevel
from .._validation import (
    check_anndata,
    check_choice,
    check_n_neighbors,
    check_obsm,
    check_spatial,
    get_counts,
)

DECODERS = ("faithful", "counts")


@dataclass
class Prepared:
    """Everything the network needs, as arrays (no AnnData inside)."""

    x: sp.csr_matrix  # model input, N x G, float32
    target: sp.csr_matrix  # ZINB target (scaled matrix or raw HVG counts)
    size_factors: np.ndarray | None
    genes: pd.Index
    adj_spa: sp.csr_matrix
    adj_fea: sp.csr_matrix
    h_llm: np.ndarray | None
    info: dict


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("semst-sc", "torch", "anndata", "scanpy", "squidpy", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover
            out[pkg] = "not installed"
    return out


def _processor_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(device) -> dict[str, Any]:
    """Where a training run happened: what, beside the seed, decides its exact numbers.

    On the CPU the same seed repeats bit for bit only with the same number of torch threads on the same
    kind of processor: both change the order of floating-point sums, and training amplifies such
    differences into different labels. The values are a string, an integer and a boolean (h5ad-serialisable).
    """
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = _processor_name()
    return {
        "device_name": str(name),
        "torch_num_threads": int(torch.get_num_threads()),
        "deterministic_on_rerun": dev.type == "cpu",
    }


def _standardize(h: np.ndarray) -> np.ndarray:
    """Centre and scale each column (language-model embeddings share a large common direction)."""
    h = np.asarray(h, dtype=np.float64)
    sd = h.std(axis=0)
    sd[sd == 0] = 1.0
    return ((h - h.mean(axis=0)) / sd).astype(np.float32)


def _input_matrix(
    adata: AnnData,
    *,
    layer: str | None,
    preprocess: bool,
    use_hvg: bool | str,
    n_top_genes: int,
    decoder: str,
) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray | None, pd.Index, dict]:
    from ..pp import preprocess_arrays

    if preprocess:
        counts = get_counts(adata, layer=layer)
        pre = preprocess_arrays(counts, adata.var_names, n_top_genes=n_top_genes)
        x = sp.csr_matrix(pre.X, dtype=np.float32)
        if decoder == "counts":
            target, sf = sp.csr_matrix(pre.counts, dtype=np.float32), np.asarray(pre.size_factors, np.float32)
        else:
            target, sf = x, None
        return x, target, sf, pd.Index(pre.genes), {"input": "counts", "n_genes": int(x.shape[1])}

    if decoder == "counts":
        raise ValueError(
            "decoder='counts' needs raw counts: use preprocess=True (the default) with counts in adata.X "
            "or in layer=..."
        )
    mat = adata.X if layer is None else adata.layers[layer]
    genes = adata.var_names
    if use_hvg:
        col = "highly_variable" if use_hvg is True else str(use_hvg)
        if col not in adata.var:
            raise KeyError(
                f"use_hvg={use_hvg!r} needs a boolean column adata.var[{col!r}]; run "
                "sc.pp.highly_variable_genes first or pass use_hvg=False"
            )
        mask = adata.var[col].to_numpy(dtype=bool)
        mat, genes = mat[:, mask], genes[mask]
    x = sp.csr_matrix(mat, dtype=np.float32)
    data = x.data
    if not np.all(np.isfinite(data)):
        raise ValueError("the input matrix has NaN or infinite values; clean it before tl.domains")
    if data.size and data.min() < 0:
        raise ValueError(
            "the input matrix has negative values, but the ZINB reconstruction needs non-negative input: "
            "scale without centring (sc.pp.scale(zero_center=False)) or use preprocess=True on raw counts"
        )
    return x, x, None, pd.Index(genes), {"input": "preprocessed", "n_genes": int(x.shape[1])}


def spatial_adjacency(
    adata: AnnData,
    *,
    spatial_key: str,
    connectivity_key: str | None,
    spatial_mode: str,
    n_spatial_neighbors: int,
    radius: float | None = None,
    library_key: str | None = None,
) -> tuple[sp.csr_matrix, str, AnnData | None]:
    """The spatial graph: ``obsp[connectivity_key]`` when present, else built through squidpy.

    The graph is built on a throwaway AnnData, so ``adata`` is never written to here. Returns the
    adjacency, how it was obtained (``'reused'`` or ``'built (<mode>)'``) and the throwaway AnnData (None
    when reused), whose distances and ``uns`` entry a caller may store. With ``library_key`` a built graph
    has no edge between spots of different slices, and a reused graph that has such edges is warned about.
    """
    from ..gr import spatial_graph
    from ..gr._spatial import _library_codes

    codes, libraries = _library_codes(adata, library_key)
    if connectivity_key is not None and connectivity_key in adata.obsp:
        adj = sp.csr_matrix(adata.obsp[connectivity_key])
        if library_key is not None:
            _warn_cross_slice(adj, codes, connectivity_key, library_key)
        degree = adj.nnz / max(adj.shape[0], 1)
        _say_what_is_reused(adata, connectivity_key, degree, spatial_mode, n_spatial_neighbors, radius)
        return adj, f"reused (mean degree {degree:.1f})", None
    if library_key is None:
        _warn_many_libraries(adata)
    tmp = AnnData(obs=pd.DataFrame(index=adata.obs_names), obsm={spatial_key: adata.obsm[spatial_key]})
    if library_key is not None:
        tmp.obs[library_key] = pd.Categorical.from_codes(codes, categories=libraries)
    spatial_graph(
        tmp,
        mode=spatial_mode,
        radius=radius,
        n_neighbors=n_spatial_neighbors,
        library_key=library_key,
        spatial_key=spatial_key,
    )
    return sp.csr_matrix(tmp.obsp[Key.obsp.spatial_conn]), f"built ({spatial_mode})", tmp


def _say_what_is_reused(
    adata: AnnData, key: str, degree: float, spatial_mode: str, n_spatial_neighbors: int, radius: float | None
) -> None:
    """Tell the user that an existing spatial graph is used instead of a new one, and what it is.

    A graph semst-sc built with other settings than this call's, or arguments for a new graph next to a
    graph of unknown settings, give a ``UserWarning``; a graph that semst-sc did not build (squidpy's
    ``spatial_neighbors``, for example: 6 neighbours on a Visium grid against the radius graph's ~55) is
    named in a logged warning, since the domains then differ from the ones the benchmarks measured.
    """
    from ..gr._spatial import RADIUS_FACTOR

    fix = f"del adata.obsp[{key!r}]"
    record = adata.uns.get(Key.uns.spatial_graph)
    params = record.get("params") if isinstance(record, dict) else None
    params = params if isinstance(params, dict) else {}
    asked = [f"spatial_mode={spatial_mode!r}"]
    if spatial_mode != "radius":
        asked.append(f"n_spatial_neighbors={n_spatial_neighbors}")
    if radius is not None:
        asked.append(f"radius={radius}")
    if "mode" in params:  # written by semst.gr.spatial_graph
        built = f"mode={params['mode']!r}"
        same = params["mode"] == spatial_mode
        if params["mode"] != "radius" and "n_neighbors" in params:
            built += f", n_neighbors={params['n_neighbors']}"
            same = same and int(params["n_neighbors"]) == int(n_spatial_neighbors)
        if radius is not None:
            same = same and np.isclose(float(params.get("radius", np.nan)), float(radius))
        if same:
            logg.info(f"    reusing the spatial graph in .obsp[{key!r}] ({built}, mean degree {degree:.1f})")
            return
        as_args = built.replace("mode=", "spatial_mode=").replace("n_neighbors=", "n_spatial_neighbors=")
        warnings.warn(
            f"adata.obsp[{key!r}] holds a spatial graph built with {built} (mean degree {degree:.1f}); "
            f"this call asks for {', '.join(asked)}. The existing graph is reused, as existing keys always "
            f"are; to build the one asked for, delete it first: {fix}; to use it without this warning, ask "
            f"for it ({as_args}).",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        return
    if spatial_mode != "radius" or n_spatial_neighbors != Default.spatial_k or radius is not None:
        warnings.warn(
            f"{', '.join(asked)} ignored: adata.obsp[{key!r}] already holds a spatial graph (mean degree "
            f"{degree:.1f}), which is reused. To build the graph asked for, delete that one first: {fix}.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        return
    origin = (
        "parameters " + ", ".join(f"{k}={v}" for k, v in params.items() if k != "transform")
        if params
        else "origin unknown"
    )
    logg.warning(
        f"reusing the spatial graph in .obsp[{key!r}], which semst-sc did not build ({origin}; mean degree "
        f"{degree:.1f}). The method's own graph (a radius of {RADIUS_FACTOR} x the median nearest-neighbour "
        f"distance) is what the benchmarks measure; to train on that one instead, delete this one first: "
        f"{fix}."
    )


def _feature_input(info: dict[str, Any], genes: pd.Index, layer: str | None, k: int) -> dict[str, Any]:
    """What a feature graph built by ``tl.domains`` depends on: k, the input matrix and its genes."""
    digest = hashlib.sha1("\n".join(map(str, genes)).encode()).hexdigest()[:16]
    return {
        "built_by": "semst.tl.domains",
        "n_neighbors": int(k),
        "input": str(info["input"]),
        "layer": "X" if layer is None else str(layer),
        "n_genes": int(info["n_genes"]),
        "genes_sha1": digest,
    }


def _check_reused_feature_graph(adata: AnnData, key: str, built_for: dict[str, Any]) -> None:
    """Warn when the feature graph that is reused was built for other settings than this call's."""
    record = adata.uns.get(Key.uns.feature_graph) if key == Key.obsp.feature_conn else None
    params = record.get("params") if isinstance(record, dict) else None
    params = params if isinstance(params, dict) else {}
    fix = f"del adata.obsp[{key!r}]"
    if params.get("built_by") == "semst.tl.domains":
        names = {"n_neighbors": "n_feature_neighbors", "n_genes": "genes", "genes_sha1": "gene list"}
        differ = [
            f"{names.get(k, k)} {params.get(k)!r} -> {v!r}"
            for k, v in built_for.items()
            if k not in ("built_by", "genes_sha1") and params.get(k) != v
        ]
        if not differ and params.get("genes_sha1") != built_for["genes_sha1"]:
            differ.append("another gene list of the same size")
        what = "an earlier tl.domains call"
    elif "n_neighbors" in params:  # semst.gr.feature_graph
        differ = []
        if int(params["n_neighbors"]) != built_for["n_neighbors"]:
            differ.append(f"n_feature_neighbors {params['n_neighbors']} -> {built_for['n_neighbors']}")
        what = "semst.gr.feature_graph"
    else:
        differ = []
        if built_for["n_neighbors"] != Default.feature_k:
            differ.append(f"n_feature_neighbors={built_for['n_neighbors']} asked, graph of unknown settings")
        what = "an unknown source"
    if differ:
        warnings.warn(
            f"adata.obsp[{key!r}] was built by {what} for other settings than this call's "
            f"({'; '.join(differ)}). It is reused, as existing keys always are; to build the one for this "
            f"call, delete it first: {fix}.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    else:
        logg.info(f"    reusing the feature graph in .obsp[{key!r}]")


def _warn_many_libraries(adata: AnnData) -> None:
    """Warn when ``uns['spatial']`` describes several libraries (slices) and no ``library_key`` was given."""
    libs = adata.uns.get("spatial")
    if isinstance(libs, dict) and len(libs) > 1:
        names = ", ".join(map(repr, list(libs)[:5])) + (", ..." if len(libs) > 5 else "")
        warnings.warn(
            f"adata.uns['spatial'] describes {len(libs)} libraries ({names}) and no library_key was given: "
            "the spatial graph will join spots of different slices wherever their coordinates overlap. If "
            "they are separate slices, pass library_key=<the obs column naming each spot's slice>.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )


def _warn_cross_slice(adj: sp.csr_matrix, codes: np.ndarray, key: str, library_key: str) -> None:
    """Warn when a reused graph joins spots of different slices (in row blocks: no temporary of size nnz)."""
    cross = 0
    for r0, r1, v0, v1 in row_blocks(adj.indptr):
        rows = r0 + block_rows(adj.indptr, r0, r1)
        cross += int(np.count_nonzero(codes[rows] != codes[adj.indices[v0:v1]]))
    if cross:
        warnings.warn(
            f"the existing graph adata.obsp[{key!r}] joins spots of different slices of "
            f"adata.obs[{library_key!r}] ({cross} directed edges) and is used as it is. To keep slices apart, "
            f"rebuild it: semst.gr.spatial_graph(adata, library_key={library_key!r}).",
            UserWarning,
            stacklevel=user_stacklevel(),
        )


def prepare(
    adata: AnnData,
    *,
    layer: str | None = None,
    preprocess: bool = True,
    use_hvg: bool | str = False,
    n_top_genes: int = Default.n_top_genes,
    decoder: str = "faithful",
    spatial_key: str = Key.obsm.spatial,
    connectivity_key: str = Key.obsp.spatial_conn,
    feature_key: str = Key.obsp.feature_conn,
    spatial_mode: str = "radius",
    n_spatial_neighbors: int = Default.spatial_k,
    n_feature_neighbors: int = Default.feature_k,
    library_key: str | None = None,
    llm_key: str | None = Key.obsm.llm,
    llm_standardize: bool = True,
    log_input: bool = Default.log_input,
    seed: int = Default.seed,
    write_graphs: bool = True,
) -> Prepared:
    """Validate ``adata`` and turn it into arrays for the network. Raises before any work is done.

    Missing graphs are built (spatial through squidpy, feature as cosine kNN on the preprocessed matrix)
    and, when ``write_graphs``, stored under new keys; existing keys are reused, never overwritten.
    ``log_input`` (with ``preprocess=True`` only) feeds ``log1p`` of the scaled matrix to the GCNs; the
    feature graph and the ZINB target stay on the scaled matrix itself.
    """
    from ..gr import cosine_knn_graph

    check_anndata(adata, fn="semst.tl.domains")
    check_spatial(adata, spatial_key)
    check_choice("decoder", decoder, DECODERS)
    if feature_key not in adata.obsp:  # before the preprocessing, so that a tiny input fails at once
        check_n_neighbors(adata.n_obs, n_feature_neighbors, "the feature graph", param="n_feature_neighbors")
    h_llm = None
    if llm_key is not None and llm_key in adata.obsm:
        h_llm = check_obsm(adata, llm_key, n_obs=adata.n_obs, made_by="semst.tl.semantic_embedding")
    x, target, sf, genes, info = _input_matrix(
        adata, layer=layer, preprocess=preprocess, use_hvg=use_hvg, n_top_genes=n_top_genes, decoder=decoder
    )

    adj_spa, info["spatial_graph"], tmp = spatial_adjacency(
        adata,
        spatial_key=spatial_key,
        connectivity_key=connectivity_key,
        spatial_mode=spatial_mode,
        n_spatial_neighbors=n_spatial_neighbors,
        library_key=library_key,
    )
    if tmp is not None and write_graphs:
        adata.obsp[connectivity_key] = adj_spa
        adata.obsp[Key.obsp.spatial_dist] = tmp.obsp[Key.obsp.spatial_dist]
        adata.uns[Key.uns.spatial_graph] = tmp.uns[Key.uns.spatial_graph]
        logg.info(f"    added spatial graph .obsp[{connectivity_key!r}]")

    built_for = _feature_input(info, genes, layer, n_feature_neighbors)
    if feature_key in adata.obsp:
        adj_fea = sp.csr_matrix(adata.obsp[feature_key])
        info["feature_graph"] = "reused"
        _check_reused_feature_graph(adata, feature_key, built_for)
    else:
        adj_fea = cosine_knn_graph(x, n_feature_neighbors, seed=seed)
        info["feature_graph"] = f"built (cosine {n_feature_neighbors}-NN)"
        if write_graphs:
            adata.obsp[feature_key] = adj_fea
            uns_key = Key.uns.feature_graph if feature_key == Key.obsp.feature_conn else None
            record = adata.uns.get(uns_key) if uns_key else None
            if uns_key and (
                record is None
                or (isinstance(record, dict) and record.get("connectivities_key") == feature_key)
            ):
                # a record of how it was built, so that a later call with other settings can say so
                adata.uns[uns_key] = {
                    "connectivities_key": feature_key,
                    "params": {**built_for, "mean_degree": float(adj_fea.nnz / max(adj_fea.shape[0], 1))},
                }
            logg.info(f"    added feature graph .obsp[{feature_key!r}]")

    if log_input and preprocess:
        x = x.copy()
        np.log1p(x.data, out=x.data)
        info["input_transform"] = "log1p"
    if h_llm is not None and llm_standardize:
        h_llm = _standardize(h_llm)
    return Prepared(x, target, sf, genes, adj_spa, adj_fea, h_llm, info)


def _cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (oneDNN's own check; False if unknown)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class SemST:
    """The SemST model bound to an AnnData: prepare, train, embed, cluster, save and load.

    :func:`semst_sc.tl.domains` is the documented entry point and uses this class; use the class when you
    want the trained network itself (to save it, inspect it, or embed again).

    Parameters
    ----------
    adata
        Raw counts in ``X`` (or ``layer``) and coordinates in ``obsm[spatial_key]``.
    fusion
        How semantics enter: ``'fsm'`` (FiLM, the method), ``'concat'``, ``'add'``, ``'cross_attention'`` or
        ``'none'``. Without ``obsm[llm_key]`` the model runs ``'none'`` and says so in the log.
    latent_dim, hidden_dim
        Width of the embedding and of the hidden layers.
    decoder
        ``'faithful'``: ZINB on the scaled matrix, as in the reference; ``'counts'``: ZINB on raw HVG counts
        with size factors.
    gcn_norm
        ``'row'``: ``D^-1 (A + I)`` (reference code); ``'sym'``: ``D^-1/2 (A + I) D^-1/2`` (paper, eq. 3).
    backend
        ``'torch'`` (``torch.sparse``, always available) or ``'dgl'`` (DGL message passing; needs the
        ``semst-sc[dgl]`` environment, see the backends page of the docs).
    seed
        Drives numpy, torch and the clustering.
    device
        ``None``: CUDA when available, else CPU.
    precision
        ``'float32'`` (default) or ``'bfloat16'``: mixed precision for the two large matrix products of an
        epoch (the first GCN layer and the ZINB heads): epochs about 1.2x faster on DLPFC on a CPU with
        native bfloat16 (see :class:`~semst_sc.nn.SemSTModule`; not measured on a GPU); warns where the
        CPU lacks it.
    **prepare_kwargs
        Passed to :func:`semst_sc.tl._semst.prepare` (``layer``, ``preprocess``, ``use_hvg``, graph options).
    """

    def __init__(
        self,
        adata: AnnData,
        *,
        fusion: str = "fsm",
        latent_dim: int = Default.latent_dim,
        hidden_dim: int = Default.hidden_dim,
        decoder: str = "faithful",
        gcn_norm: str = "row",
        backend: str = "torch",
        seed: int = Default.seed,
        device: str | None = None,
        precision: str = Default.precision,
        **prepare_kwargs: Any,
    ) -> None:
        from .._train import resolve_device

        check_choice("fusion", fusion, FUSIONS)
        check_choice("precision", precision, PRECISIONS)
        check_choice("gcn_norm", gcn_norm, GCN_NORMS)
        check_choice("backend", backend, BACKENDS)
        self.device = resolve_device(device)  # an unavailable device fails before any work
        if backend == "dgl":  # an unusable DGL fails before any work too
            from ..nn._dgl import check_dgl_device, require_dgl

            require_dgl()
            check_dgl_device(self.device)
        if precision == "bfloat16" and self.device.type == "cpu" and not _cpu_has_bf16():
            warnings.warn(
                "precision='bfloat16' on a CPU without native bfloat16 instructions: the products are "
                "emulated and slower than float32. Use precision='float32' (the default) here.",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        self.adata = adata
        self.data = prepare(adata, decoder=decoder, seed=seed, **prepare_kwargs)
        if fusion != "none" and self.data.h_llm is None:
            llm_key = prepare_kwargs.get("llm_key", Key.obsm.llm)
            logg.warning(
                f"no semantic embedding in .obsm[{llm_key!r}]: semantics are OFF (fusion='none'). Run "
                "semst.tl.semantic_embedding(adata) first, or pass model=... to semst.tl.domains"
            )
            fusion = "none"
        self.params: dict[str, Any] = {
            "fusion": fusion,
            "latent_dim": int(latent_dim),
            "hidden_dim": int(hidden_dim),
            "decoder": decoder,
            "gcn_norm": gcn_norm,
            "backend": backend,
            "seed": int(seed),
            "device": str(self.device),
            "precision": precision,
            "semantics": "off" if fusion == "none" else "on",
            **{k: v for k, v in prepare_kwargs.items() if isinstance(v, str | int | float | bool)},
        }
        self.module = self._build_module()
        self.history: dict[str, np.ndarray] = {}
        self.environment: dict[str, Any] = {}  # filled by train()
        self.trained = False

    def _build_module(self):
        from .._train import seed_everything
        from ..nn import SemSTModule

        seed_everything(self.params["seed"])  # initial weights are part of what the seed fixes

        llm_dim = None if self.data.h_llm is None else int(self.data.h_llm.shape[1])
        p = self.params
        module = SemSTModule(
            int(self.data.x.shape[1]),
            llm_dim if p["fusion"] != "none" else None,
            hidden=p["hidden_dim"],
            latent=p["latent_dim"],
            fusion=p["fusion"],
            gcn_norm=p["gcn_norm"],
            decoder=p["decoder"],
            precision=p["precision"],
        )
        if p["backend"] == "dgl":
            from ..nn._dgl import use_dgl

            use_dgl(module)  # same parameters, DGL message passing for every graph convolution
        return module

    def _inputs(self):
        from .._train import TrainInputs

        d = self.data
        return TrainInputs(
            x=d.x,
            adj_spa=d.adj_spa,
            adj_fea=d.adj_fea,
            target=d.target,
            spatial_edges=d.adj_spa,
            h_llm=d.h_llm if self.params["fusion"] != "none" else None,
            size_factors=d.size_factors,
        )

    def train(
        self,
        n_epochs: int = Default.n_epochs,
        *,
        lr: float = Default.lr,
        weight_decay: float = Default.weight_decay,
        gamma: float = Default.gamma,
        lambda_s: float = Default.lambda_s,
        spatial_weighting: str = Default.spatial_weighting,
        zinb_fraction: float = Default.zinb_fraction,
        ema_decay: float = Default.ema_decay,
        early_stopping: bool = False,
        progress: bool = True,
    ) -> SemST:
        """Train the network label-free (Adam, full graph, one step per epoch). Returns ``self``.

        ``spatial_weighting`` scales the spatial loss (see :func:`semst_sc.nn.spatial_regularization_loss`);
        ``zinb_fraction`` is the share of spots the ZINB loss reconstructs per epoch (see
        :func:`semst_sc.tl.domains`); ``ema_decay`` above 0 ends training on an exponentially weighted mean
        of the weights over the epochs (see :func:`semst_sc.tl.domains`).
        """
        from .._train import train

        if n_epochs < 1:
            raise ValueError(f"n_epochs must be at least 1, got {n_epochs}")
        start = time.perf_counter()
        self.environment = environment(self.device)
        self.history = train(
            self.module,
            self._inputs(),
            n_epochs=n_epochs,
            lr=lr,
            weight_decay=weight_decay,
            gamma=gamma,
            lambda_s=lambda_s,
            spatial_weighting=spatial_weighting,
            zinb_fraction=zinb_fraction,
            ema_decay=ema_decay,
            device=self.device,
            seed=self.params["seed"],
            progress=progress,
            early_stopping=early_stopping,
        )
        self.params.update(
            n_epochs=int(n_epochs),
            lr=float(lr),
            weight_decay=float(weight_decay),
            gamma=float(gamma),
            lambda_s=float(lambda_s),
            spatial_weighting=spatial_weighting,
            zinb_fraction=float(zinb_fraction),
            ema_decay=float(ema_decay),
            early_stopping=bool(early_stopping),
        )
        self.train_time = time.perf_counter() - start
        self.trained = True
        return self

    def get_embedding(self) -> np.ndarray:
        """The learned embedding ``Z_final`` (N x latent_dim, float32)."""
        from .._train import embed

        if not self.trained:
            raise RuntimeError("the model is not trained yet: call .train() first (or .load() a saved one)")
        return np.asarray(embed(self.module, self._inputs(), device=self.device), dtype=np.float32)

    def save(self, path: str | Path) -> None:
        """Save weights, parameters, genes, loss history and training environment to one file.

        Written with ``torch.save``; :meth:`load` reads it back.
        """
        import torch

        from .._train import _plain

        if not self.trained:
            raise RuntimeError("nothing to save: call .train() first")
        state = {
            "state_dict": self.module.state_dict(),
            "params": self.params,
            "genes": list(map(str, self.data.genes)),
            "history": {k: np.asarray(v) for k, v in self.history.items()},
            "versions": _versions(),
            "environment": dict(self.environment),
        }
        # tensors and plain Python values only, so that load() can read the file with weights_only=True
        torch.save({"state_dict": state.pop("state_dict"), **_plain(state)}, Path(path))

    @classmethod
    def load(
        cls, path: str | Path, adata: AnnData, *, device: str | None = None, trusted: bool = False
    ) -> SemST:
        """Rebuild the model for ``adata`` from a file written by :meth:`save`.

        ``adata`` must carry the genes the model was trained on; the inputs are prepared from it the same
        way as in training. The file is read with ``torch.load(..., weights_only=True)``, which runs no
        code from it. Files saved before 2026-12-07 also hold numpy arrays, which that refuses; pass
        ``trusted=True`` to read such a file that you trust (a full unpickling, which can run code).
        """
        import pickle

        import torch

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no model file at {path}; write one with SemST.save(path) after .train()."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=not trusted)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{path} holds Python objects besides tensors, so it was not read (weights_only=True runs no "
                "code from a file). A semst-sc model saved before 2026-12-07 is such a file: if you trust "
                "it, pass trusted=True."
            ) from err
        if not isinstance(state, dict) or not {"state_dict", "params", "genes"} <= set(state):
            raise ValueError(f"{path} is not a model written by semst.tl.SemST.save.")
        state["history"] = {k: np.asarray(v) for k, v in state.get("history", {}).items()}
        p = dict(state["params"])
        prep_keys = {
            k: p[k]
            for k in (
                "layer",
                "preprocess",
                "use_hvg",
                "n_top_genes",
                "spatial_key",
                "llm_key",
                "spatial_mode",
                "n_spatial_neighbors",
                "n_feature_neighbors",
                "library_key",
                "log_input",
            )
            if k in p
        }
        model = cls(
            adata,
            fusion=p["fusion"],
            latent_dim=p["latent_dim"],
            hidden_dim=p["hidden_dim"],
            decoder=p["decoder"],
            gcn_norm=p["gcn_norm"],
            backend=p.get("backend", "torch"),
            seed=p["seed"],
            device=device,
            precision=p.get("precision", Default.precision),
            **prep_keys,
        )
        if list(map(str, model.data.genes)) != list(state["genes"]):
            raise ValueError(
                "the genes selected on this AnnData differ from the ones the model was trained on; load it "
                "on the same data (same genes, same preprocessing)"
            )
        model.module.load_state_dict(state["state_dict"])
        model.history = state["history"]
        model.environment = dict(state.get("environment", {}))  # where it was trained
        model.params.update(p)
        model.params["device"] = str(model.device)
        model.trained = True
        return model
