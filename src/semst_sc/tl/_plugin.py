"""FSM plug-and-play (paper Table 3): spatial domains from a STAGATE-style graph-attention autoencoder,
with or without SemST's FSM module on its latent space.

The encoder is :class:`semst_sc.nn.GATAutoencoder`; the FSM inside it is :class:`semst_sc.nn.FSM`, unchanged.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scanpy import logging as logg

from .._constants import Default, Key
from .._validation import check_anndata, check_matrix, check_spatial, get_counts
from ._semst import spatial_adjacency

_H_LLM_FIX = "Pass e.g. adata.obsm['X_llm'] from semst.tl.semantic_embedding for this AnnData."

__all__ = ["gat_domains", "stagate_matrix"]

#: STAGATE's defaults
GAT_HIDDEN = 512
GAT_LATENT = 30
GRAD_CLIP = 5.0
#: STAGATE's own gene count (semst-sc's default for its model is ``Default.n_top_genes``)
STAGATE_N_TOP_GENES = 3000


def stagate_matrix(counts: sp.csr_matrix, var_names: pd.Index, n_top_genes: int = STAGATE_N_TOP_GENES):
    """STAGATE's input: Seurat-v3 genes on the counts, ``normalize_total(1e4)`` over all genes, ``log1p``.

    Parameters
    ----------
    counts
        Raw counts, spots x genes, CSR (validated by ``get_counts``); not modified.
    var_names
        Gene names.
    n_top_genes
        Highly variable genes kept (all genes when the panel has no more).

    Returns
    -------
    tuple
        ``(x, genes)``: the log-normalised matrix of the selected genes (CSR float32) and their names.
    """
    from ..pp._preprocess import _seurat_v3_hvg

    genes = pd.Index(np.asarray(var_names).astype(str))
    n_top = int(n_top_genes)
    if n_top >= counts.shape[1]:
        keep = np.arange(counts.shape[1])
    else:
        keep = np.flatnonzero(_seurat_v3_hvg(counts, genes, n_top))
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    scale = Default.target_sum / np.maximum(totals, 1e-12)
    x = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ counts[:, keep], dtype=np.float32)
    x.data = np.log1p(x.data)
    return x, genes[keep]


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if int(value) < low:
        raise ValueError(f"`{name}` must be at least {low}, got {value}.")
    return int(value)


def gat_domains(
    adata: AnnData,
    n_domains: int,
    *,
    h_llm: np.ndarray | None = None,
    n_epochs: int = 500,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = Default.seed,
    device: str | torch.device | None = None,
    spatial_key: str = Key.obsm.spatial,
    connectivity_key: str | None = Key.obsp.spatial_conn,
    spatial_mode: str = "radius",
    radius: float | None = None,
    n_spatial_neighbors: int = Default.spatial_k,
    layer: str | None = None,
    n_top_genes: int = STAGATE_N_TOP_GENES,
    hidden: int = GAT_HIDDEN,
    latent: int = GAT_LATENT,
    return_embedding: bool = False,
    progress: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Spatial domains from a STAGATE-style graph-attention autoencoder, optionally with SemST's FSM.

    The FSM plug-and-play experiment of the paper (Table 3): the same encoder is trained with and without
    :class:`semst_sc.nn.FSM` modulating its latent space by the semantic embedding ``h_llm``.

    Steps, all on copies (``adata`` is never modified):

    1. STAGATE's preprocessing: Seurat-v3 highly variable genes on the raw counts (``n_top_genes``),
       per-spot normalisation to 1e4 over all genes, ``log1p``.
    2. The spatial graph: ``obsp[connectivity_key]`` when present, else :func:`semst_sc.gr.spatial_graph`
       on a copy (``spatial_mode``, ``radius``, ``n_spatial_neighbors``); self-loops are added.
    3. :class:`semst_sc.nn.GATAutoencoder` (hidden 512, latent 30), trained full-graph on the MSE
       reconstruction with Adam and gradient-norm clipping at 5 (STAGATE's settings), seeded and
       deterministic on CPU. With ``h_llm`` the columns are standardised and the model has an FSM.
    4. The (modulated) embedding is clustered into ``n_domains`` with
       :func:`semst_sc.tl.cluster_embedding` (``method='gmm'``, ``metric='euclidean'``).

    No annotation is read anywhere.

    Parameters
    ----------
    adata
        Raw counts in ``X`` (or ``layer``) and coordinates in ``obsm[spatial_key]``.
    n_domains
        Number of domains.
    h_llm
        Semantic embedding, N x D, rows in the order of ``adata.obs_names`` (e.g.
        ``adata.obsm['X_llm']``); ``None`` trains without FSM.
    n_epochs
        Training steps (full graph, one per epoch).
    lr, weight_decay
        Adam settings (STAGATE: 1e-3, 1e-4).
    seed
        Seeds the weights, the training and the clustering; the same seed gives the same labels on CPU.
    device
        ``None`` (CUDA when available, else CPU), ``'cpu'``, ``'cuda'``, ...
    spatial_key
        Key of the coordinates in ``obsm``.
    connectivity_key
        Key of an existing spatial graph in ``obsp`` to reuse; ``None`` always builds one.
    spatial_mode, radius, n_spatial_neighbors
        How the graph is built when none is reused (see :func:`semst_sc.gr.spatial_graph`). STAGATE
        itself uses a radius of about 1.1 spot pitches on Visium (150 full-resolution pixels on DLPFC).
    layer
        Layer holding the raw counts; ``None`` reads ``X``.
    n_top_genes
        Highly variable genes (STAGATE: 3000).
    hidden, latent
        Widths of the attention layer and of the embedding.
    return_embedding
        Also return the embedding.
    progress
        Show a progress bar with the loss.

    Returns
    -------
    labels
        Integer domain labels ``0..n_domains-1`` (int64, ordered by decreasing domain size), one per spot.
        Nothing is written to ``adata``.
    embedding
        Only with ``return_embedding=True``: the N x ``latent`` float32 embedding that was clustered.

    Raises
    ------
    TypeError, ValueError, KeyError
        Wrong input (not an AnnData, no coordinates, counts that are not counts, ``h_llm`` with the wrong
        number of rows, bad hyper-parameters), before any work is done.
    FloatingPointError
        The loss became NaN or infinite (lower ``lr``).
    """
    from .._train import _deterministic, optimizer, resolve_device, seed_everything
    from ..nn import AttentionGraph, GATAutoencoder
    from ._cluster import cluster_embedding

    fn = "semst.tl._plugin.gat_domains"
    check_anndata(adata, fn=fn)
    check_spatial(adata, spatial_key)
    n_domains = _check_int("n_domains", n_domains, 1)
    if n_domains >= adata.n_obs:
        raise ValueError(
            f"`n_domains` ({n_domains}) must be smaller than the number of spots ({adata.n_obs})."
        )
    n_epochs = _check_int("n_epochs", n_epochs, 1)
    n_top_genes = _check_int("n_top_genes", n_top_genes, 2)
    if isinstance(lr, bool) or not (isinstance(lr, Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be a positive number, got {lr!r}.")
    if isinstance(weight_decay, bool) or not (
        isinstance(weight_decay, Real) and math.isfinite(weight_decay) and weight_decay >= 0
    ):
        raise ValueError(f"`weight_decay` must be a non-negative number, got {weight_decay!r}.")
    h = None if h_llm is None else check_matrix(h_llm, name="`h_llm`", n_obs=adata.n_obs, fix=_H_LLM_FIX)
    dev = resolve_device(device)
    counts = get_counts(adata, layer=layer)
    seed_everything(seed)  # checks the seed too

    start = logg.info(f"GAT autoencoder{' + FSM' if h is not None else ''} on {adata.n_obs} spots")
    x_sp, genes = stagate_matrix(counts, adata.var_names, n_top_genes)
    adj, how, _ = spatial_adjacency(
        adata,
        spatial_key=spatial_key,
        connectivity_key=connectivity_key,
        spatial_mode=spatial_mode,
        radius=radius,
        n_spatial_neighbors=n_spatial_neighbors,
    )
    if adj.shape != (adata.n_obs, adata.n_obs):
        raise ValueError(
            f"adata.obsp[{connectivity_key!r}] has shape {adj.shape}; expected ({adata.n_obs}, {adata.n_obs}). "
            "Rebuild it with semst.gr.spatial_graph, or pass connectivity_key=None."
        )
    graph = AttentionGraph.from_adjacency(adj, self_loops=True).to(dev)
    logg.info(
        f"    {genes.size} genes, spatial graph {how}: {graph.n_edges} edges with self-loops "
        f"({graph.n_edges / adata.n_obs:.1f} per spot)"
    )
    if h is not None:
        from ._semst import _standardize

        h = _standardize(h)

    with _deterministic(dev.type == "cpu"):
        seed_everything(seed)  # the initial weights are part of what the seed fixes
        model = GATAutoencoder(
            int(genes.size), llm_dim=None if h is None else int(h.shape[1]), hidden=hidden, latent=latent
        ).to(dev)
        x = torch.from_numpy(x_sp.toarray()).to(dev)  # N x genes (not N x N): STAGATE's dense input
        h_t = None if h is None else torch.from_numpy(h).to(dev)
        opt = optimizer(model.parameters(), dev, lr=lr, weight_decay=weight_decay)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_epochs, desc="GAT-AE", unit="epoch")
        model.train()
        for _ in range(n_epochs):
            opt.zero_grad(set_to_none=True)
            loss = model.loss(x, model(x, graph, h_t).recon)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the GAT-AE loss became {loss.item()}; try a lower `lr`.")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            if bar is not None:
                bar.set_postfix(loss=f"{loss.item():.4f}")
                bar.update()
        if bar is not None:
            bar.close()
        model.eval()
        with torch.no_grad():
            z = model.encode(x, graph, h_t)[0].cpu().numpy().astype(np.float32)

    # euclidean: the geometry the recorded before / after table (benchmarks/README.md) was measured in
    labels, _ = cluster_embedding(z, n_domains, method="gmm", metric="euclidean", seed=int(seed))
    labels = np.asarray(labels, dtype=np.int64)
    logg.info("    finished", time=start)
    return (labels, z) if return_embedding else labels
