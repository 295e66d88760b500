"""The learned embedding in two dimensions: :func:`embedding`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from scanpy import logging as logg

from .._constants import Key
from .._docs import inject_docs
from ._palette import ensure_colors
from ._utils import as_key_list, check_adata, check_color, check_obsm, check_show, finish


def _fingerprint(x: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(x).data, usedforsecurity=False).hexdigest()


def _umap_params(emb: np.ndarray, basis: str, n_neighbors: int, seed: int) -> dict:
    """What a cached UMAP records in ``uns[key_added]['params']``; it is reused only when these match."""
    return {
        "basis": basis,
        "n_neighbors": int(n_neighbors),
        "seed": int(seed),
        "fingerprint": _fingerprint(emb),
    }


def _umap(adata: AnnData, basis: str, key_added: str, n_neighbors: int, seed: int) -> np.ndarray:
    """UMAP of ``obsm[basis]``, cached in ``obsm[key_added]``; the user's neighbors/umap are not touched."""
    import scanpy as sc

    emb = np.asarray(adata.obsm[basis])
    if emb.ndim != 2 or emb.shape[0] != adata.n_obs:
        raise ValueError(f"adata.obsm[{basis!r}] must be a 2-d array with one row per spot, got {emb.shape}")
    if not np.issubdtype(emb.dtype, np.number):
        raise TypeError(f"adata.obsm[{basis!r}] must be numeric, got {emb.dtype}")
    params = _umap_params(emb, basis, n_neighbors, seed)
    rec = adata.uns.get(key_added)
    if (
        key_added in adata.obsm
        and isinstance(rec, Mapping)
        and isinstance(rec.get("params"), Mapping)
        and {k: rec["params"].get(k) for k in params} == params
    ):
        logg.debug(f"reusing the UMAP in adata.obsm[{key_added!r}]")
        return np.asarray(adata.obsm[key_added])
    n_neighbors = min(int(n_neighbors), adata.n_obs - 1)
    if n_neighbors < 2:
        raise ValueError(f"a UMAP needs at least 3 spots, got {adata.n_obs}")
    logg.info(f"computing a UMAP of adata.obsm[{basis!r}] ({emb.shape[1]} dimensions)")
    # A light AnnData holding only the embedding: scanpy writes its graph and UMAP there, not into the
    # user's object (whose 'neighbors' and 'X_umap' may belong to another analysis).
    tmp = AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()))
    tmp.obsm["rep"] = emb.astype(np.float32, copy=False)
    sc.pp.neighbors(tmp, use_rep="rep", n_neighbors=n_neighbors, random_state=seed)
    sc.tl.umap(tmp, random_state=seed)
    coords = np.asarray(tmp.obsm["X_umap"], dtype=np.float32)
    adata.obsm[key_added] = coords
    adata.uns[key_added] = {"params": params}
    logg.info(f"added adata.obsm[{key_added!r}] and adata.uns[{key_added!r}]")
    return coords


@inject_docs()
def embedding(
    adata: AnnData,
    *,
    basis: str = Key.obsm.semst,
    color: str | Sequence[str] = Key.obs.domain,
    truth_key: str | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    key_added: str | None = None,
    ax: Axes | None = None,
    return_ax: bool = False,
    show: bool | None = None,
    save: str | Path | None = None,
    title: str | Sequence[str] | None = None,
    **kwargs: Any,
) -> Axes | list[Axes] | None:
    """Draw a UMAP of the learned embedding, coloured by domain (and by the annotation if given).

    The UMAP is computed with scanpy on a kNN graph of ``adata.obsm[basis]`` and stored in
    ``adata.obsm[key_added]``; a later call reuses it as long as the embedding and the parameters are
    the same. The user's own ``neighbors`` graph and ``X_umap`` are never touched.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`semst_sc.tl.domains`.
    basis
        Key of the embedding in :attr:`anndata.AnnData.obsm`.
    color
        Key(s) of :attr:`anndata.AnnData.obs` (or genes) to colour by; one panel each.
    truth_key
        A column of :attr:`anndata.AnnData.obs` with a reference annotation, drawn as one more panel.
    n_neighbors
        Number of neighbours of the kNN graph the UMAP is built on.
    seed
        Random seed of the UMAP layout.
    key_added
        Where the UMAP coordinates are stored in :attr:`anndata.AnnData.obsm` (its parameters under the
        same key in :attr:`anndata.AnnData.uns`); ``'<basis>_umap'`` by default.
    ax
        Axes to draw into (only with a single panel); a new figure is made when ``None``.
    return_ax
        Return the axes (one, or a list of one per panel) instead of ``None``.
    {show}
    save
        Path of a file to write the figure to; the format follows the extension.
    title
        Panel title(s); the key names by default.
    **kwargs
        Passed on to :func:`scanpy.pl.embedding` (e.g. ``size``, ``legend_loc``, ``ncols``).

    Returns
    -------
    The axes if ``return_ax=True``, else ``None``. Writes ``adata.obsm[key_added]`` (UMAP coordinates),
    ``adata.uns[key_added]['params']`` and ``adata.uns['<key>_colors']`` for categorical keys without
    a valid palette.
    """
    check_show(show, save)
    import scanpy as sc

    check_adata(adata)
    keys = as_key_list(color)
    if truth_key is not None:
        if not isinstance(truth_key, str):
            raise TypeError(f"truth_key must be a string, got {type(truth_key).__name__}")
        keys.append(truth_key)
    check_obsm(adata, basis)
    for key in keys:
        check_color(adata, key)
    if ax is not None and len(keys) > 1:
        raise ValueError(f"ax= takes one Axes, but {len(keys)} panels are drawn; pass ax=None")
    if key_added is None:
        key_added = f"{basis}_umap"
    _umap(adata, basis, key_added, n_neighbors, seed)
    for key in dict.fromkeys(keys):
        ensure_colors(adata, key)

    kwargs.setdefault("frameon", False)
    out = sc.pl.embedding(
        adata,
        basis=key_added,
        color=keys if len(keys) > 1 else keys[0],
        ax=ax,
        title=title,
        show=False,
        **kwargs,
    )
    axes = [out] if isinstance(out, Axes) else list(out)
    for a in axes:
        a.set_xlabel("UMAP1")
        a.set_ylabel("UMAP2")
    return finish(
        axes[0].figure, axes[0] if len(axes) == 1 else axes, save=save, return_ax=return_ax, show=show
    )
