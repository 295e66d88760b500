"""The method's preprocessing (METHOD.md 1.1), sparse from end to end.

Genes detected in fewer than ``min_cells`` spots are dropped; Seurat-v3 highly variable genes are picked
on the raw counts; every spot is scaled so that its counts over those genes sum to ``target_sum`` (no log);
every gene is divided by its standard deviation (no centring, so zeros stay zeros and the matrix stays
sparse) and the result is clipped at ``max_value``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scipy import sparse

from .._constants import Default, Key
from .._docs import inject_docs
from .._utils import block_rows, row_blocks, user_stacklevel
from .._validation import check_anndata, check_key, get_counts, key_names


@dataclass
class Preprocessed:
    """Result of :func:`semst_sc.pp.preprocess_arrays` (and of :func:`semst_sc.pp.preprocess` with ``inplace=False``).

    Attributes
    ----------
    X
        Scaled matrix, CSR float32, spots x highly variable genes.
    genes
        Names of the highly variable genes (columns of ``X`` and ``counts``), in the input's gene order.
    counts
        Raw counts of the same genes, CSR float32.
    size_factors
        Count sum over the highly variable genes of every spot divided by the median of the non-zero sums.
    params
        The parameters actually used (``min_cells`` and ``n_top_genes`` after automatic adjustment).
    """

    X: sparse.csr_matrix
    genes: pd.Index
    counts: sparse.csr_matrix
    size_factors: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def _check_positive(name: str, value: Any, *, integer: bool, allow_zero: bool = False) -> None:
    ok_type = isinstance(value, int | np.integer) if integer else isinstance(value, int | float | np.number)
    if isinstance(value, bool) or not ok_type:
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {value!r}.")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}.")


def _seurat_v3_hvg(counts: sparse.csr_matrix, genes: pd.Index, n_top: int) -> np.ndarray:
    """Boolean mask of the ``n_top`` Seurat-v3 highly variable genes, computed by scanpy on a throwaway AnnData."""
    import scanpy as sc

    try:
        import skmisc.loess  # noqa: F401
    except ImportError as e:  # pragma: no cover - scikit-misc is a dependency
        raise ImportError("Seurat-v3 gene selection needs scikit-misc: `pip install scikit-misc`.") from e
    tmp = AnnData(X=counts, var=pd.DataFrame(index=genes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scanpy's notes on a throwaway object, not the user's
        try:
            # check_values=False: the counts were validated as non-negative integers already
            # (get_counts), and scanpy's own check is a full pass over the matrix that only warns
            df = sc.pp.highly_variable_genes(
                tmp, flavor="seurat_v3", n_top_genes=n_top, inplace=False, check_values=False
            )
        except ValueError as e:  # the loess fit of Seurat v3 fails on very few genes or very few spots
            why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
            raise ValueError(
                f"Seurat-v3 gene selection failed on {counts.shape[0]} spots x {genes.size} genes ({why}): its "
                "loess fit of each gene's variance against its mean needs more spots or more genes than these. "
                f"Keep every gene instead (n_top_genes={genes.size} or more), or give it more spots."
            ) from e
    return df["highly_variable"].to_numpy(dtype=bool)


def preprocess_arrays(
    counts: sparse.spmatrix,
    var_names: pd.Index | list[str] | np.ndarray,
    *,
    n_top_genes: int = Default.n_top_genes,
    min_cells: int = Default.min_cells,
    target_sum: float = Default.target_sum,
    max_value: float | None = Default.scale_max,
) -> Preprocessed:
    """Run the method's preprocessing on a count matrix, without any AnnData.

    Parameters
    ----------
    counts
        Raw counts, spots x genes, sparse (validated counts as returned by
        ``semst_sc._validation.get_counts``). Not modified.
    var_names
        Gene names, one per column.
    n_top_genes, min_cells, target_sum, max_value
        See :func:`semst_sc.pp.preprocess`.

    Returns
    -------
    A :class:`~semst_sc.pp.Preprocessed` with the scaled matrix, the genes, their raw counts and the size factors.
    """
    _check_positive("n_top_genes", n_top_genes, integer=True)
    _check_positive("min_cells", min_cells, integer=True, allow_zero=True)
    _check_positive("target_sum", target_sum, integer=False)
    if max_value is not None:
        _check_positive("max_value", max_value, integer=False)
    counts = sparse.csr_matrix(counts)
    genes = pd.Index(np.asarray(var_names).astype(str))
    if genes.size != counts.shape[1]:
        raise ValueError(
            f"var_names has {genes.size} names but the count matrix has {counts.shape[1]} columns."
        )
    n_obs, n_genes = counts.shape
    if counts.dtype != np.float32:
        counts = counts.astype(np.float32)

    # 1. gene filter (lowered on small panels so that enough genes survive)
    detected = np.bincount(counts.indices[counts.data > 0], minlength=n_genes)
    n_expressed = int((detected > 0).sum())
    if n_expressed == 0:
        raise ValueError("no gene has a non-zero count in any spot; check that the matrix holds counts.")
    n_top = min(int(n_top_genes), n_expressed)
    if n_top < n_top_genes:
        logg.info(f"    only {n_expressed} genes are detected: using all of them as highly variable genes")
    min_cells_used = int(min_cells)
    if int((detected >= min_cells_used).sum()) < n_top:
        lowered = max(1, int(np.sort(detected)[::-1][n_top - 1]))
        logg.info(
            f"    min_cells={min_cells_used} would keep {int((detected >= min_cells_used).sum())} genes, fewer than "
            f"the {n_top} highly variable genes asked for: lowering it to {lowered}"
        )
        min_cells_used = lowered
    keep = np.flatnonzero(detected >= max(min_cells_used, 1))
    if keep.size < 2:
        raise ValueError(
            f"only {keep.size} gene(s) are detected in >= {min_cells_used} spots; need at least 2."
        )
    n_top = min(n_top, keep.size)
    kept_counts = counts if keep.size == n_genes else counts[:, keep]  # no copy when every gene is kept

    # 2. Seurat v3 highly variable genes on the counts (all genes when the panel is no larger than n_top)
    if n_top >= keep.size:
        hvg_local = np.ones(keep.size, dtype=bool)
    else:
        hvg_local = _seurat_v3_hvg(kept_counts, genes[keep], n_top)
    hvg_idx = keep[hvg_local]
    hvg_counts = kept_counts[:, np.flatnonzero(hvg_local)].tocsr()
    hvg_counts.sort_indices()

    # 3. per-spot normalisation to target_sum over the highly variable genes, no log; and
    # 4. division of every gene by its standard deviation (unbiased, as scanpy), no centring; clipping.
    # Done block by block of rows so that the temporaries stay small however many spots there are.
    indptr, indices, raw = hvg_counts.indptr, hvg_counts.indices, hvg_counts.data
    sums = np.zeros(n_obs, dtype=np.float64)
    for a, b, lo, hi in row_blocks(indptr):
        sums[a:b] = np.bincount(block_rows(indptr, a, b), weights=raw[lo:hi], minlength=b - a)
    zero = sums <= 0
    if zero.any():
        warnings.warn(
            f"{int(zero.sum())} of {n_obs} spots have no count on the {hvg_idx.size} highly variable genes; "
            "their preprocessed rows are left at zero. Consider removing them.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    scale_rows = np.zeros(n_obs, dtype=np.float64)
    scale_rows[~zero] = target_sum / sums[~zero]
    n_cols = hvg_idx.size
    data = np.empty(raw.size, dtype=np.float32)
    col_sum = np.zeros(n_cols, dtype=np.float64)
    col_sq = np.zeros(n_cols, dtype=np.float64)
    for a, b, lo, hi in row_blocks(indptr):
        values = raw[lo:hi] * scale_rows[a:b][block_rows(indptr, a, b)]
        col_sum += np.bincount(indices[lo:hi], weights=values, minlength=n_cols)
        col_sq += np.bincount(indices[lo:hi], weights=values * values, minlength=n_cols)
        data[lo:hi] = values
    mean = col_sum / n_obs
    var = col_sq / n_obs - mean**2
    if n_obs > 1:
        var *= n_obs / (n_obs - 1)
    std = np.sqrt(np.maximum(var, 0.0))
    std[std == 0] = 1.0
    for _, _, lo, hi in row_blocks(indptr):
        scaled = data[lo:hi] / std[indices[lo:hi]]
        if max_value is not None:
            np.minimum(scaled, max_value, out=scaled)
        data[lo:hi] = scaled
    X = sparse.csr_matrix((data, indices.copy(), indptr.copy()), shape=(n_obs, n_cols))
    X.eliminate_zeros()

    positive = sums[~zero]
    median = float(np.median(positive)) if positive.size else 1.0
    params = {
        "n_top_genes": int(n_cols),
        "n_top_genes_requested": int(n_top_genes),
        "min_cells": int(min_cells_used),
        "min_cells_requested": int(min_cells),
        "target_sum": float(target_sum),
        "max_value": float(max_value) if max_value is not None else float("inf"),
        "n_genes_input": int(n_genes),
    }
    return Preprocessed(
        X=X,
        genes=genes[hvg_idx],
        counts=hvg_counts,
        size_factors=(sums / median).astype(np.float32),
        params=params,
    )


def _hvg_index(pre: Preprocessed, var_names: pd.Index) -> np.ndarray:
    return var_names.get_indexer(pre.genes)


@inject_docs()
def preprocess(
    adata: AnnData,
    *,
    n_top_genes: int = Default.n_top_genes,
    min_cells: int = Default.min_cells,
    target_sum: float = Default.target_sum,
    max_value: float | None = Default.scale_max,
    layer: str | None = None,
    inplace: bool = True,
    key_added: str = Key.layers.scaled,
) -> Preprocessed | None:
    """Preprocess raw counts the way SemST does (METHOD.md 1.1), never touching ``adata.X``.

    Genes detected in fewer than ``min_cells`` spots are dropped; the Seurat v3 highly variable genes are
    chosen on the counts (scanpy, ``flavor='seurat_v3'``, computed on a throwaway object); every spot is
    scaled so that its counts over those genes sum to ``target_sum`` (no log transform); every gene is
    divided by its standard deviation without centring and the result is clipped at ``max_value``. The
    matrix stays sparse throughout. Spots without any count on the selected genes keep a zero row (with a
    warning). On small panels ``n_top_genes`` is capped at the number of detected genes and ``min_cells``
    is lowered so that enough genes survive (both logged).

    Parameters
    ----------
    {adata_counts}
    {n_top_genes}
    {min_cells}
    {target_sum}
    {max_value}
    {counts_layer}
    inplace
        Write the result into ``adata`` (``True``) or return it (``False``).
    key_added
        Layer that receives the scaled matrix. The default layer, and any layer an earlier call wrote (as
        listed in ``uns['{record}']['layers']``), is written again; an existing layer of another name (e.g.
        ``'counts'``), or the layer the counts are read from, is refused with a ValueError, never replaced.

    Returns
    -------
    With ``inplace=True``, ``None``; writes

    - ``adata.var['{hvg}']`` - boolean, the highly variable genes;
    - ``adata.layers[key_added]`` - CSR float32, the scaled matrix at full width (zero outside the highly
      variable genes);
    - ``adata.uns['{record}']`` - ``params`` (those used, after any adjustment for a small panel, with
      ``layer`` and ``key_added``) and ``layers``, every layer the calls on this object wrote.

    With ``inplace=False``, a :class:`~semst_sc.pp.Preprocessed` holding the scaled matrix of the highly
    variable genes, their names, their raw counts and the per-spot size factors; ``adata`` is unchanged.
    """
    check_anndata(adata, fn="semst.pp.preprocess")
    check_key(key_added)
    written = _written_layers(adata)
    ours = written | {Key.layers.scaled}  # the default layer is always semst-sc's to write again
    if inplace and key_added in adata.layers and (key_added not in ours or key_added == layer):
        # another layer of that name holds the user's data (the raw counts, often): never write over it
        raise ValueError(
            f"semst.pp.preprocess would overwrite adata.layers[{key_added!r}]"
            + (", the counts it reads" if key_added == layer else ", which it did not write")
            + f". Pass another key_added= (the default is {Key.layers.scaled!r}), or remove that layer first "
            f"(`del adata.layers[{key_added!r}]`) if it is to be replaced."
        )
    counts = get_counts(adata, layer=layer)
    start = logg.info(f"preprocessing {adata.n_obs} spots x {adata.n_vars} genes")
    pre = preprocess_arrays(
        counts,
        adata.var_names,
        n_top_genes=n_top_genes,
        min_cells=min_cells,
        target_sum=target_sum,
        max_value=max_value,
    )
    if not inplace:
        logg.info("    finished", time=start)
        return pre

    cols = _hvg_index(pre, adata.var_names)
    X = pre.X
    full = sparse.csr_matrix((X.data, cols[X.indices], X.indptr), shape=adata.shape)
    mask = np.zeros(adata.n_vars, dtype=bool)
    mask[cols] = True
    adata.var[Key.var.hvg] = mask
    adata.layers[key_added] = full
    adata.uns[Key.uns.preprocess] = {
        "params": {**pre.params, "layer": "X" if layer is None else layer, "key_added": key_added},
        "layers": sorted((written & set(adata.layers)) | {key_added}),
    }
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    'var[{Key.var.hvg!r}]', {cols.size} highly variable genes\n"
        f"    'layers[{key_added!r}]', scaled matrix (sparse, float32)\n"
        f"    'uns[{Key.uns.preprocess!r}]', parameters",
    )
    return None


def _written_layers(adata: AnnData) -> set[str]:
    """The layers earlier :func:`preprocess` calls wrote into ``adata``, as its record lists them."""
    record = adata.uns.get(Key.uns.preprocess)
    layers = record.get("layers", ()) if isinstance(record, dict) else ()
    return key_names(layers)


preprocess.__doc__ = preprocess.__doc__.replace("{hvg}", Key.var.hvg).replace("{record}", Key.uns.preprocess)
