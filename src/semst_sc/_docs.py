"""Shared numpy-style parameter descriptions, injected into docstrings.

Write ``{adata}`` (or any other key of :data:`PARAMS`) on a line of its own in a docstring's Parameters
section and decorate the function with :func:`inject_docs`. The snippet replaces the placeholder with the
indentation of that line, so docstrings read the same whether Python dedents them or not. Placeholders
that are not keys of :data:`PARAMS` (or of the keyword arguments given to :func:`inject_docs`) are left
alone, so literal braces elsewhere in a docstring are safe.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from ._constants import Default, Key

F = TypeVar("F", bound=Callable)

PARAMS: dict[str, str] = {
    "adata": """adata
    Annotated data matrix: spots (or cells) in rows, genes in columns.""",
    "adata_counts": f"""adata
    Annotated data matrix with raw integer UMI counts in ``X`` (or in ``layer``), spatial coordinates in
    ``obsm['{Key.obsm.spatial}']`` and gene symbols as ``var_names``.""",
    "spatial_key": f"""spatial_key
    Key in :attr:`anndata.AnnData.obsm` with the spot coordinates (N x 2 or N x 3). Defaults to
    ``'{Key.obsm.spatial}'``.""",
    "library_key": """library_key
    Column of :attr:`anndata.AnnData.obs` naming the slice (library) of every spot. Spots of different
    slices are never connected. ``None`` treats all spots as one slice.""",
    "counts_layer": """layer
    Layer with the raw counts. ``None`` reads :attr:`anndata.AnnData.X`.""",
    "copy": """copy
    Return a modified copy instead of writing to ``adata``.""",
    "seed": f"""seed
    Seed of every random choice the function makes; the same seed gives the same result on CPU.
    Defaults to ``{Default.seed}``.""",
    "n_top_genes": f"""n_top_genes
    Number of highly variable genes (Seurat v3 on counts). Capped at the number of genes kept by the gene
    filter. Defaults to ``{Default.n_top_genes}``.""",
    "min_cells": f"""min_cells
    Keep genes detected in at least this many spots. Lowered automatically (and logged) when it would
    leave fewer genes than ``n_top_genes``, as happens on small targeted panels. Defaults to
    ``{Default.min_cells}``.""",
    "target_sum": f"""target_sum
    Every spot is scaled so that its counts over the highly variable genes sum to this value. Defaults to
    ``{Default.target_sum:g}``.""",
    "max_value": f"""max_value
    Clip the scaled values at this value; ``None`` disables clipping. Defaults to ``{Default.scale_max:g}``.""",
    "show": """show
    Scanpy's switch, for code written for ``scanpy.pl``: ``True`` calls :func:`matplotlib.pyplot.show`,
    ``False`` returns the axes as ``return_ax=True`` does. ``None`` (the default) does neither.""",
}


_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\{(?P<key>\w+)\}[ \t]*$", re.MULTILINE)


def _fill(doc: str, params: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match["key"]
        if key not in params:
            return match[0]
        indent = match["indent"]
        return "\n".join(indent + line if line else line for line in params[key].splitlines())

    return _PLACEHOLDER.sub(replace, doc)


def inject_docs(**extra: str) -> Callable[[F], F]:
    """Decorator filling ``{name}`` placeholder lines of a docstring from :data:`PARAMS`.

    Parameters
    ----------
    extra
        Additional or overriding snippets for this one function.

    Returns
    -------
    The decorator; it returns the same function with its ``__doc__`` filled in.
    """
    params = {**PARAMS, **extra}

    def decorator(func: F) -> F:
        if func.__doc__:
            func.__doc__ = _fill(func.__doc__, params)
        return func

    return decorator
