"""Colours of categorical annotations, kept in ``adata.uns['<key>_colors']`` so scanpy and squidpy reuse them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib import colormaps
from matplotlib.colors import Colormap, is_color_like, to_hex
from scanpy import logging as logg

from .._constants import Key

#: The semst-sc qualitative palette: 20 colours of high mutual contrast (after K. Kelly's 1965 list of
#: colours of maximum contrast, reordered so that the first seven, the usual number of cortical layers,
#: are the most distinct). Beyond 20 categories scanpy's 102-colour palette takes over.
SEMST_PALETTE: tuple[str, ...] = (
    "#0067a5",  # strong blue
    "#f38400",  # vivid orange
    "#008856",  # vivid green
    "#be0032",  # vivid red
    "#875692",  # strong purple
    "#f3c300",  # vivid yellow
    "#a1caf1",  # very light blue
    "#e68fac",  # strong purplish pink
    "#c2b280",  # greyish yellow
    "#882d17",  # strong reddish brown
    "#8db600",  # vivid yellow-green
    "#604e97",  # strong violet
    "#f99379",  # strong yellowish pink
    "#f6a600",  # vivid orange-yellow
    "#b3446c",  # strong purplish red
    "#dcd300",  # vivid greenish yellow
    "#654522",  # deep yellowish brown
    "#e25822",  # vivid reddish orange
    "#2b3d26",  # dark olive green
    "#848482",  # medium grey
)

#: Colour of spots without a label (NaN), e.g. unannotated spots in a ground truth.
NA_COLOR = "#d3d3d3"


def default_colors(n: int) -> list[str]:
    """``n`` distinct hex colours: the semst palette, then scanpy's 102-colour palette, then repeats."""
    if n <= len(SEMST_PALETTE):
        return list(SEMST_PALETTE[:n])
    from scanpy.plotting.palettes import default_102

    pool = [to_hex(c) for c in default_102]
    if n > len(pool):
        logg.warning(f"{n} categories but only {len(pool)} distinct colours: some colours repeat")
    return [pool[i % len(pool)] for i in range(n)]


def spare_colors(n: int) -> list[str]:
    """At least ``n`` colours, ours first: the semst palette, then scanpy's 102 (without repeats)."""
    from scanpy.plotting.palettes import default_102

    pool = list(SEMST_PALETTE) + [h for h in (to_hex(c) for c in default_102) if h not in SEMST_PALETTE]
    return [pool[i % len(pool)] for i in range(max(n, len(pool)))]


def categories_of(adata: AnnData, key: str) -> pd.Index | None:
    """Categories of ``adata.obs[key]`` if it is (or reads as) a categorical column, else ``None``.

    String and boolean columns count as categorical (scanpy and squidpy convert them before plotting).
    """
    if key not in adata.obs:
        return None
    col = adata.obs[key]
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.categories
    if (
        pd.api.types.is_bool_dtype(col)
        or pd.api.types.is_object_dtype(col)
        or pd.api.types.is_string_dtype(col)
    ):
        return pd.Categorical(col.astype(str) if pd.api.types.is_bool_dtype(col) else col).categories
    return None


def _valid_stored(adata: AnnData, key: str, n: int) -> list[str] | None:
    """The stored palette of ``key`` if it has at least ``n`` valid colours (first ``n`` of them), else None."""
    stored = adata.uns.get(Key.colors(key))
    if stored is None or isinstance(stored, str | bytes | Mapping):
        return None
    stored = list(np.asarray(stored).ravel())
    if len(stored) < n or not all(is_color_like(c) for c in stored[:n]):
        return None
    return [to_hex(c, keep_alpha=False) if not isinstance(c, str) else c for c in stored[:n]]


def resolve_palette(palette: Any, categories: Sequence[Any]) -> list[str]:
    """Turn a user's ``palette`` into one hex colour per category.

    ``palette`` may be a matplotlib colormap or its name, a sequence of colours (at least one per
    category), or a mapping category -> colour covering every category.
    """
    n = len(categories)
    if isinstance(palette, str):
        if palette not in colormaps:
            raise ValueError(
                f"palette={palette!r} is not a matplotlib colormap name; pass a name such as 'tab20'"
            )
        palette = colormaps[palette]
    if isinstance(palette, Colormap):
        n_colors = getattr(palette, "N", 256)
        if n_colors <= 256 and hasattr(palette, "colors") and n <= n_colors:
            return [to_hex(c) for c in list(palette.colors)[:n]]
        return [to_hex(c) for c in palette(np.linspace(0, 1, n))]
    if isinstance(palette, Mapping):
        missing = [c for c in categories if c not in palette]
        if missing:
            raise ValueError(
                f"palette has no colour for the categories {missing}; give one for each category"
            )
        colors = [palette[c] for c in categories]
    elif isinstance(palette, Sequence | np.ndarray):
        colors = list(palette)
        if len(colors) < n:
            raise ValueError(
                f"palette has {len(colors)} colours but there are {n} categories; give at least {n}"
            )
        colors = colors[:n]
    else:
        raise TypeError(
            f"palette must be a colormap (or its name), a list of colours or a dict, not {type(palette).__name__}"
        )
    bad = [c for c in colors if not is_color_like(c)]
    if bad:
        raise ValueError(f"palette contains values that are not colours: {bad}")
    return [to_hex(c) for c in colors]


def ensure_colors(adata: AnnData, key: str, palette: Any = None) -> list[str] | None:
    """Make sure ``adata.uns['<key>_colors']`` holds one colour per category of ``adata.obs[key]``.

    A valid stored palette is kept (a longer one is cut to the number of categories, as scanpy shows
    it); a missing or invalid one is replaced by :data:`SEMST_PALETTE`. An explicit ``palette`` is
    resolved and stored, as scanpy does. Returns the colours, or ``None`` when ``key`` is not categorical.
    """
    cats = categories_of(adata, key)
    if cats is None:
        return None
    color_key = Key.colors(key)
    if palette is not None:
        colors = resolve_palette(palette, list(cats))
    else:
        colors = _valid_stored(adata, key, len(cats))
        if colors is not None:
            if len(np.asarray(adata.uns[color_key]).ravel()) != len(colors):
                adata.uns[color_key] = colors
            return colors
        if color_key in adata.uns:
            logg.warning(f"adata.uns[{color_key!r}] does not hold {len(cats)} valid colours; replacing it")
        colors = default_colors(len(cats))
    adata.uns[color_key] = colors
    logg.debug(f"stored the palette of {key!r} in adata.uns[{color_key!r}]")
    return colors
