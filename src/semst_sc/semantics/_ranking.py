"""Which genes speak for a spot: gene symbols, the ranking matrix and the top-k selection.

Everything here works on arrays (a sparse count matrix, gene names, a ``var``-like table); no AnnData.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from .._constants import Default

#: Ensembl gene identifiers: ENSG00000..., ENSMUSG00000..., ENSDARG..., with an optional version suffix.
ENSEMBL_PATTERN = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")

#: ``var`` columns that commonly hold gene symbols, looked at in this order when the names are Ensembl ids.
SYMBOL_COLUMNS = (
    "gene_symbols",
    "gene_symbol",
    "gene_name",
    "gene_names",
    "symbol",
    "symbols",
    "feature_name",
    "gene_short_name",
    "gene",
    "genes",
    "name",
    "gene_ids",
)


def _ensembl_fraction(values: pd.Index | pd.Series | np.ndarray) -> float:
    text = pd.Series(np.asarray(values, dtype=object)).astype(str)
    if len(text) == 0:
        return 0.0
    return float(text.str.match(ENSEMBL_PATTERN).mean())


#: A name that ends in a number, split into what comes before (separators dropped) and the number.
_NUMBERED = r"^(.*?)[\s_.\-]*(\d+)$"


def _placeholder_names(values: np.ndarray) -> tuple[float, str]:
    """Share of the names that are one common stem plus a number (``'0'``, ``'feat12'``, ``'Gene_7'``).

    Such names are what is left when the symbols were lost (a matrix read without its gene column, a
    ``range`` index). Real symbols spread over many stems: on the DLPFC slice the most common one
    (``ZNF``) covers 2 % of the genes, on osmFISH and STARmap 2-3 %. Returns the share and the stem.
    """
    text = pd.Series(np.asarray(values, dtype=object)).astype(str).str.strip()
    if len(text) < 2:
        return 0.0, ""
    parts = text.str.extract(_NUMBERED)
    stems = parts[0][parts[1].notna()].str.lower()
    if stems.empty:
        return 0.0, ""
    counts = stems.value_counts()
    return float(counts.iloc[0] / len(text)), str(counts.index[0])


def _check_not_placeholders(symbols: np.ndarray, source: str) -> None:
    share, stem = _placeholder_names(symbols)
    if share > 0.5:
        where = "adata.var_names" if source == "var_names" else f"adata.var[{source!r}]"
        what = "plain numbers" if stem == "" else f"{stem!r} followed by a number"
        raise ValueError(
            f"{where} do not look like gene symbols: {share:.0%} of them are {what} (e.g. "
            f"{', '.join(map(repr, list(symbols[:3])))}), which a language model cannot read as genes. "
            "Set adata.var_names to the gene symbols, or pass gene_symbols='<the adata.var column that holds "
            "them>'."
        )


def resolve_symbols(
    var_names: pd.Index, var: pd.DataFrame, gene_symbols: str | None = None
) -> tuple[np.ndarray, str]:
    """The gene symbol of every gene, as text for the prompts.

    Parameters
    ----------
    var_names
        The gene names (``adata.var_names``).
    var
        The gene table (``adata.var``).
    gene_symbols
        Column of ``var`` with the symbols. `None`: use ``var_names`` unless most of them are Ensembl ids,
        then look for a column from :data:`SYMBOL_COLUMNS` that holds symbols.

    Returns
    -------
    symbols
        One string per gene. A gene whose symbol is missing in the column keeps its ``var_names`` entry.
    source
        ``"var_names"`` or the column used.
    """
    if gene_symbols is not None:
        if not isinstance(gene_symbols, str):
            raise TypeError(
                f"gene_symbols must be the name of a column of adata.var, got {type(gene_symbols).__name__}"
            )
        if gene_symbols not in var.columns:
            raise KeyError(
                f"gene_symbols={gene_symbols!r} is not a column of adata.var; columns are {list(var.columns)}."
            )
        column = gene_symbols
    elif _ensembl_fraction(var_names) <= 0.5:
        symbols = np.asarray(var_names.astype(str), dtype=object)
        _check_not_placeholders(symbols, "var_names")
        return symbols, "var_names"
    else:
        column = None
        for candidate in SYMBOL_COLUMNS:
            if candidate in var.columns:
                values = var[candidate]
                if values.notna().mean() > 0.5 and _ensembl_fraction(values.dropna()) <= 0.5:
                    column = candidate
                    break
        if column is None:
            raise ValueError(
                "adata.var_names are Ensembl ids (e.g. "
                f"{var_names[0]!r}), which a language model cannot read as genes, and no column of adata.var "
                f"holds gene symbols (looked for {list(SYMBOL_COLUMNS)}; columns are {list(var.columns)}). "
                "Add the symbols as a column and pass gene_symbols='<column>', or set adata.var_names to symbols."
            )
    values = var[column]
    text = values.astype(object).where(values.notna(), None)
    text = pd.Series([None if v is None else str(v).strip() for v in text], index=var.index, dtype=object)
    missing = text.isna() | (text == "") | (text.str.lower() == "nan")
    symbols = np.where(missing.to_numpy(), np.asarray(var_names.astype(str), dtype=object), text.to_numpy())
    if _ensembl_fraction(pd.Index(symbols)) > 0.5:
        raise ValueError(
            f"the column adata.var[{column!r}] holds Ensembl ids, not gene symbols; pass gene_symbols= with the "
            "column that holds the symbols."
        )
    symbols = np.asarray(symbols, dtype=object)
    _check_not_placeholders(symbols, column)
    return symbols, column


def as_counts_csr(x) -> sparse.csr_matrix:
    """A CSR view (or, for dense input, a CSR copy) of a count matrix; checks for negative values."""
    if sparse.issparse(x):
        mat = x.tocsr() if x.format != "csr" else x
    elif isinstance(x, np.ndarray):
        mat = sparse.csr_matrix(x)
    else:
        raise TypeError(f"expected a numpy array or a scipy sparse matrix of counts, got {type(x).__name__}")
    if not (np.issubdtype(mat.dtype, np.floating) or np.issubdtype(mat.dtype, np.integer)):
        raise TypeError(f"the count matrix must be numeric, got dtype {mat.dtype}")
    if mat.nnz and mat.data.min() < 0:
        raise ValueError(
            "the expression matrix has negative values: semantic_embedding ranks genes on raw counts in adata.X "
            "(scaled or log-normalised data cannot be ranked the paper's way). Put raw counts in adata.X."
        )
    return mat


@dataclass
class RankingMatrix:
    """Expression values used to rank genes within each spot.

    Attributes
    ----------
    X
        CSR matrix, spots x ranked genes, float32, non-negative.
    genes
        Column positions of the ranked genes in the original gene axis.
    """

    X: sparse.csr_matrix
    genes: np.ndarray


def scaled_hvg_ranking(
    counts: sparse.csr_matrix,
    *,
    n_top_genes: int = Default.n_top_genes,
    min_cells: int = Default.min_cells,
    target_sum: float = Default.target_sum,
    max_value: float = Default.scale_max,
) -> RankingMatrix:
    """The paper's matrix, from :func:`semst_sc.pp.preprocess_arrays`: Seurat-v3 HVGs on counts (genes in
    fewer than ``min_cells`` spots dropped first), normalised to ``target_sum`` by the HVG sum, no log,
    scaled to unit variance without centring, clipped at ``max_value``. Only HVGs can be ranked.
    """
    from ..pp import preprocess_arrays

    positions = np.arange(counts.shape[1]).astype(str)  # positional names: duplicated gene names are fine
    pre = preprocess_arrays(
        counts,
        positions,
        n_top_genes=n_top_genes,
        min_cells=min_cells,
        target_sum=target_sum,
        max_value=max_value,
    )
    return RankingMatrix(X=sparse.csr_matrix(pre.X, dtype=np.float32), genes=pre.genes.astype(int).to_numpy())


def layer_ranking(scaled: sparse.spmatrix | np.ndarray, hvg: np.ndarray) -> RankingMatrix:
    """Ranking matrix from a scaled layer already in the AnnData (``semst.pp.preprocess``): its HVG columns."""
    genes = np.flatnonzero(np.asarray(hvg, dtype=bool))
    x = sparse.csr_matrix(scaled)[:, genes]
    x = sparse.csr_matrix(x, dtype=np.float32)
    return RankingMatrix(X=x, genes=genes)


def lognorm_ranking(counts: sparse.csr_matrix, *, target_sum: float = Default.target_sum) -> RankingMatrix:
    """``log1p`` of counts normalised to ``target_sum`` per spot, over all genes (the input is not modified)."""
    x = sparse.csr_matrix(counts, dtype=np.float32, copy=True)
    totals = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    x.data = np.log1p(x.data * np.repeat(scale, np.diff(x.indptr))).astype(np.float32)
    x.eliminate_zeros()
    return RankingMatrix(X=x, genes=np.arange(counts.shape[1]))


@dataclass
class TopGenes:
    """The top genes of every spot, best first.

    Attributes
    ----------
    index
        ``(n_spots, k)`` int64 column positions into the ranking matrix, ``-1`` where a spot has fewer genes.
    value
        ``(n_spots, k)`` float32 ranking values, ``0`` where a spot has fewer genes.
    n_genes
        ``(n_spots,)`` number of genes selected per spot (less than ``k`` when fewer are expressed).
    """

    index: np.ndarray
    value: np.ndarray
    n_genes: np.ndarray


def top_genes(
    x: sparse.csr_matrix, k: int, *, symbol_codes: np.ndarray | None = None, chunk_nnz: int = 20_000_000
) -> TopGenes:
    """The ``k`` highest positive entries of every row of a sparse matrix, in descending order.

    Ties are broken by column order. With ``symbol_codes`` (an integer code per column), a symbol is
    taken at most once per spot (its best-ranked column), and the next genes fill the list up to ``k``.
    Works in row chunks of about ``chunk_nnz`` stored entries, so memory stays bounded.
    """
    if k < 1:
        raise ValueError(f"top_k must be a positive integer, got {k}")
    x = sparse.csr_matrix(x)
    n_rows = x.shape[0]
    out_index = np.full((n_rows, k), -1, dtype=np.int64)
    out_value = np.zeros((n_rows, k), dtype=np.float32)
    out_n = np.zeros(n_rows, dtype=np.int64)
    n_codes = int(symbol_codes.max()) + 1 if symbol_codes is not None and len(symbol_codes) else 1
    start = 0
    while start < n_rows:
        # Grow the chunk until it holds about chunk_nnz entries (at least one row).
        stop = int(np.searchsorted(x.indptr, x.indptr[start] + chunk_nnz, side="right")) - 1
        stop = min(max(stop, start + 1), n_rows)
        lo, hi = x.indptr[start], x.indptr[stop]
        vals = x.data[lo:hi]
        cols = x.indices[lo:hi].astype(np.int64)
        rows = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(x.indptr[start : stop + 1]))
        ok = np.isfinite(vals) & (vals > 0)
        vals, cols, rows = vals[ok], cols[ok], rows[ok]
        order = np.lexsort((cols, -vals, rows))
        vals, cols, rows = vals[order], cols[order], rows[order]
        if symbol_codes is not None:
            key = rows * n_codes + symbol_codes[cols]
            _, first = np.unique(key, return_index=True)
            first.sort()
            vals, cols, rows = vals[first], cols[first], rows[first]
        row_start = np.searchsorted(rows, np.arange(stop - start))
        rank = np.arange(len(rows)) - row_start[rows]
        sel = rank < k
        out_index[start + rows[sel], rank[sel]] = cols[sel]
        out_value[start + rows[sel], rank[sel]] = vals[sel]
        out_n[start:stop] = np.minimum(np.bincount(rows, minlength=stop - start), k)
        start = stop
    return TopGenes(index=out_index, value=out_value, n_genes=out_n)
