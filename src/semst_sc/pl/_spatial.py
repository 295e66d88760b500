"""Domains on the tissue: :func:`spatial` and :func:`compare` (drawing delegated to squidpy)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from .._constants import Key
from .._docs import inject_docs
from .._utils import import_squidpy
from ._palette import NA_COLOR, default_colors, ensure_colors, spare_colors
from ._utils import as_key_list, check_adata, check_color, check_obs, check_obsm, check_show, finish


def _has_image(adata: AnnData, spatial_key: str) -> bool:
    """Whether ``adata.uns[spatial_key]`` holds at least one library with images (Visium-style)."""
    libs = adata.uns.get(spatial_key)
    if not isinstance(libs, Mapping) or not libs:
        return False
    return any(isinstance(v, Mapping) and v.get("images") for v in libs.values())


def _scatter(
    adata: AnnData,
    keys: list[str],
    *,
    spatial_key: str,
    library_id: str | Sequence[str] | None,
    ax: Axes | Sequence[Axes] | None,
    title: str | Sequence[str] | None,
    size: float | None,
    kwargs: dict[str, Any],
) -> list[Axes]:
    """Call :func:`squidpy.pl.spatial_scatter` with our defaults; returns the axes as a list."""
    sq = import_squidpy()

    if "shape" in kwargs:
        shape = kwargs.pop("shape")
    else:
        # With a tissue image squidpy draws spot circles on it; without, plain dots on the coordinates.
        shape = "circle" if _has_image(adata, spatial_key) else None
    library_key = kwargs.get("library_key")
    if shape is None and library_id is None and library_key is None:
        library_id = [""]  # one set of coordinates, no image library: say so instead of a squidpy warning
    n_panels = len(keys)
    if library_key is not None:
        # one panel per slice and key: name the slice in each title (squidpy's titles repeat the key only)
        check_obs(adata, library_key)
        if not isinstance(adata.obs[library_key].dtype, pd.CategoricalDtype):
            # squidpy needs a categorical column: without one it fails, or draws every spot in every panel
            raise TypeError(
                f"adata.obs[{library_key!r}] must be categorical to draw one panel per slice; convert it "
                f"first: adata.obs[{library_key!r}] = adata.obs[{library_key!r}].astype('category')"
            )
        if library_id is None:
            # the values themselves (squidpy compares them with the column), not their text
            library_id = list(adata.obs[library_key].cat.remove_unused_categories().cat.categories)
        libs = [library_id] if isinstance(library_id, str) else list(library_id)
        n_panels = len(keys) * len(libs)
        if title is None:
            if kwargs.get("library_first", True):
                title = [f"{key} ({lib})" for lib in libs for key in keys]
            else:
                title = [f"{key} ({lib})" for key in keys for lib in libs]
    kwargs.setdefault("na_color", NA_COLOR)
    kwargs.setdefault("frameon", False)
    if ax is not None and not isinstance(ax, Axes):
        ax = list(ax)
        if len(ax) != n_panels:
            raise ValueError(f"got {len(ax)} axes for {n_panels} panels; pass one Axes per key (and slice)")
        if len(ax) == 1:
            ax = ax[0]
    elif ax is not None and n_panels > 1:
        raise ValueError(f"one Axes given for {n_panels} panels; pass a list of {n_panels} Axes or ax=None")
    with warnings.catch_warnings():
        # squidpy hands matplotlib a colormap together with explicit colours for categories; harmless
        warnings.filterwarnings("ignore", message="No data for colormapping provided via 'c'")
        out = sq.pl.spatial_scatter(
            adata,
            shape=shape,
            color=keys if len(keys) > 1 else keys[0],
            spatial_key=spatial_key,
            library_id=library_id,
            size=size,
            title=title,
            ax=ax,
            return_ax=True,
            **kwargs,
        )
    axes = [out] if isinstance(out, Axes) else list(np.ravel(out))
    for a in axes:
        a.set_aspect("equal")
    return axes


@inject_docs()
def spatial(
    adata: AnnData,
    color: str | Sequence[str] = Key.obs.domain,
    *,
    spatial_key: str = Key.obsm.spatial,
    library_id: str | Sequence[str] | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    return_ax: bool = False,
    show: bool | None = None,
    save: str | Path | None = None,
    title: str | Sequence[str] | None = None,
    palette: Any = None,
    size: float | None = None,
    **kwargs: Any,
) -> Axes | list[Axes] | None:
    """Draw spatial domains (or any annotation or gene) on the tissue coordinates.

    The drawing is done by :func:`squidpy.pl.spatial_scatter`: spot circles on the tissue image when
    ``adata.uns[spatial_key]`` holds one, plain dots on the coordinates otherwise. Categorical keys get
    one colour per category, stored in ``adata.uns['<key>_colors']`` so scanpy and squidpy plots show
    the same colours; an existing valid palette there is kept, a missing one is filled from the
    semst-sc qualitative palette.

    Parameters
    ----------
    adata
        Annotated data matrix with coordinates in ``adata.obsm[spatial_key]``.
    color
        One key or a list of keys of ``adata.obs`` (or gene names), drawn side by side. Defaults to the
        domains written by :func:`semst_sc.tl.domains`.
    spatial_key
        Key of the coordinates in :attr:`anndata.AnnData.obsm` (and of the images in
        :attr:`anndata.AnnData.uns`, if any).
    library_id
        Which library (image) to draw, for data with several; see :func:`squidpy.pl.spatial_scatter`.
        With ``library_key`` (passed on to squidpy): the slices to draw, every slice by default, one panel
        per slice and key, each title naming its slice.
    ax
        Axes to draw into: one per panel. A new figure is made when ``None``.
    return_ax
        Return the axes instead of ``None``.
    {show}
    save
        Path of a file to write the figure to; the format follows the extension (``.png``, ``.pdf``, ...).
    title
        Panel title(s); the key names by default (``'key (slice)'`` with ``library_key``).
    palette
        Colours of the categories: a matplotlib colormap or its name, a list of colours or a dict
        category -> colour. When given it is stored in ``adata.uns['<key>_colors']`` (as scanpy does);
        when ``None`` the stored palette is used.
    size
        Dot size (points squared) without an image, a scale of the spot diameter with an image.
    **kwargs
        Passed on to :func:`squidpy.pl.spatial_scatter` (e.g. ``groups``, ``legend_loc``, ``figsize``,
        ``cmap``, ``shape``, ``img``, ``library_key``).

    Returns
    -------
    The axes (one, or a list of one per key) if ``return_ax=True``, else ``None``.
    Writes ``adata.uns['<key>_colors']`` for categorical keys without a valid palette.

    Examples
    --------
    >>> import semst_sc as semst
    >>> adata = semst.datasets.demo()
    >>> semst.pl.spatial(adata, color="layer_guess_reordered")
    """
    check_show(show, save)
    check_adata(adata)
    keys = as_key_list(color)
    check_obsm(adata, spatial_key)
    for key in keys:
        check_color(adata, key)
    for key in dict.fromkeys(keys):
        ensure_colors(adata, key, palette)
    axes = _scatter(
        adata,
        keys,
        spatial_key=spatial_key,
        library_id=library_id,
        ax=ax,
        title=title,
        size=size,
        kwargs=kwargs,
    )
    return finish(
        axes[0].figure, axes[0] if len(axes) == 1 else axes, save=save, return_ax=return_ax, show=show
    )


def _labels(col: pd.Series) -> pd.Categorical:
    """A column as a categorical with string categories (what is drawn and matched)."""
    cat = col.astype("category") if not isinstance(col.dtype, pd.CategoricalDtype) else col
    cat = pd.Categorical(cat)
    return cat.rename_categories([str(c) for c in cat.categories])


def _scored(truth: pd.Categorical, pred: pd.Categorical) -> np.ndarray:
    """Spots labelled in both (missing labels as :func:`semst_sc.tl.evaluate` reads them)."""
    from ..tl._evaluate import _unlabelled

    return ~(_unlabelled(pd.Series(truth)) | _unlabelled(pd.Series(pred)))


def matched_colors(
    truth: pd.Categorical, pred: pd.Categorical, truth_colors: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """Colour each predicted domain like its Hungarian-matched annotation.

    Only spots labelled in both are used for the matching. Predicted domains left without a match (more
    domains than annotations) get colours that no annotation uses. Returns the colours, in the order of
    ``pred.categories``, and the matching pred -> truth.
    """
    from ..tl._metrics import match_labels

    scored = _scored(truth, pred)
    t = np.asarray(truth[scored]).astype(str)
    p = np.asarray(pred[scored]).astype(str)
    mapping = {str(k): str(v) for k, v in match_labels(t, p).items() if v is not None}
    tcol = dict(zip(truth.categories, truth_colors, strict=True))
    used = set(truth_colors)
    spare = iter([c for c in spare_colors(len(truth_colors) + len(pred.categories)) if c not in used])
    colors = []
    for cat in pred.categories:
        t_cat = mapping.get(cat)
        colors.append(tcol[t_cat] if t_cat in tcol else next(spare))
    return colors, {k: mapping[k] for k in pred.categories if k in mapping}


@inject_docs()
def compare(
    adata: AnnData,
    truth_key: str,
    pred_key: str = Key.obs.domain,
    *,
    spatial_key: str = Key.obsm.spatial,
    library_id: str | Sequence[str] | None = None,
    ax: Sequence[Axes] | None = None,
    return_ax: bool = False,
    show: bool | None = None,
    save: str | Path | None = None,
    title: Sequence[str] | None = None,
    size: float | None = None,
    **kwargs: Any,
) -> list[Axes] | None:
    """Draw an annotation and the predicted domains side by side, in matching colours.

    Each predicted domain takes the colour of the annotated region it is matched to by the Hungarian
    algorithm (the matching that maximises the number of agreeing spots), so agreement and disagreement
    are visible at a glance; its legend entry reads ``domain (matched annotation)``. The adjusted Rand
    index of the two labelings is given in the title of the prediction panel. Spots without an
    annotation are drawn grey and left out of the matching and of the ARI, which is the one
    :func:`semst_sc.tl.evaluate` reports.

    Parameters
    ----------
    adata
        Annotated data matrix with coordinates in ``adata.obsm[spatial_key]``.
    truth_key
        Column of :attr:`anndata.AnnData.obs` with the reference annotation (e.g. cortical layers).
    pred_key
        Column of :attr:`anndata.AnnData.obs` with the predicted domains, by default those written by
        :func:`semst_sc.tl.domains`.
    spatial_key
        Key of the coordinates in :attr:`anndata.AnnData.obsm`.
    library_id
        Which library (image) to draw, for data with several.
    ax
        Two axes to draw into (annotation, prediction). A new figure is made when ``None``.
    return_ax
        Return the two axes instead of ``None``.
    {show}
    save
        Path of a file to write the figure to; the format follows the extension.
    title
        The two panel titles; by default the annotation key, and the prediction key with the ARI.
    size
        Dot size, as in :func:`spatial`.
    **kwargs
        Passed on to :func:`squidpy.pl.spatial_scatter`.

    Returns
    -------
    The two axes if ``return_ax=True``, else ``None``. The colours of the annotation are stored in
    ``adata.uns['<truth_key>_colors']`` when it is categorical and has no valid palette yet; the
    palette of the predicted domains in ``adata.uns`` is left unchanged (the matched colours are
    specific to this comparison).
    """
    check_show(show, save)
    from ..tl._metrics import ari as adjusted_rand_index

    check_adata(adata)
    check_obsm(adata, spatial_key)
    check_obs(adata, truth_key)
    check_obs(adata, pred_key)
    if truth_key == pred_key:
        raise ValueError(f"truth_key and pred_key are both {truth_key!r}; compare two different columns")
    if title is not None and (isinstance(title, str) or len(title) != 2):
        raise ValueError("title must be a pair of strings (annotation panel, prediction panel)")
    truth = _labels(adata.obs[truth_key])
    pred = _labels(adata.obs[pred_key])
    scored = _scored(truth, pred)
    if not scored.any():
        raise ValueError(f"no spot is labelled in both obs[{truth_key!r}] and obs[{pred_key!r}]")

    if isinstance(adata.obs[truth_key].dtype, pd.CategoricalDtype):
        truth_colors = ensure_colors(adata, truth_key)
    else:  # not a categorical column of the user's: colour it without writing to adata
        truth_colors = default_colors(len(truth.categories))
    pred_colors, mapping = matched_colors(truth, pred, truth_colors)
    ari = adjusted_rand_index(np.asarray(truth[scored]), np.asarray(pred[scored]))

    # A light stand-in holding only what is drawn, so the user's AnnData keeps its own palettes.
    proxy = AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()))
    proxy.obsm[spatial_key] = np.asarray(adata.obsm[spatial_key])
    if _has_image(adata, spatial_key):
        proxy.uns[spatial_key] = adata.uns[spatial_key]
    proxy.obs[truth_key] = truth
    proxy.obs[pred_key] = pred.rename_categories(
        [f"{c} ({mapping[c]})" if c in mapping else str(c) for c in pred.categories]
    )
    proxy.uns[f"{truth_key}_colors"] = list(truth_colors)
    proxy.uns[f"{pred_key}_colors"] = pred_colors
    if title is None:
        title = [truth_key, f"{pred_key} (ARI = {ari:.3f})"]
    axes = _scatter(
        proxy,
        [truth_key, pred_key],
        spatial_key=spatial_key,
        library_id=library_id,
        ax=ax,
        title=list(title),
        size=size,
        kwargs=kwargs,
    )
    return finish(axes[0].figure, axes, save=save, return_ax=return_ax, show=show)
