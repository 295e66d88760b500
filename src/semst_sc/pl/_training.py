"""What the training recorded: :func:`loss` and :func:`domain_selection`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes

from .._constants import Key
from .._docs import inject_docs
from ._palette import SEMST_PALETTE
from ._utils import check_adata, check_show, finish, new_axes, semst_result

#: How the recorded loss terms are named in the legend (other keys are shown as they are).
_LOSS_LABELS = {
    "loss": "total",
    "zinb": "ZINB reconstruction",
    "cr": "correlation reduction",
    "spatial": "spatial regularisation",
}


#: entries of the training history that are not loss curves
_NOT_LOSSES = frozenset({"seconds", "stopped_epoch", "early_stopped"})


def _history(rec: Mapping, key: str) -> dict[str, np.ndarray]:
    hist = rec.get("history")
    if not isinstance(hist, Mapping) or not hist:
        raise KeyError(f"adata.uns[{key!r}] has no 'history' of the training: run semst.tl.domains first")
    out = {}
    for name, values in hist.items():
        if str(name) in _NOT_LOSSES or np.ndim(values) == 0:  # timings and stopping info, not losses
            continue
        arr = np.asarray(values, dtype=float).ravel()
        if arr.size:
            out[str(name)] = arr
    if not out:
        raise ValueError(f"adata.uns[{key!r}]['history'] is empty: nothing to plot")
    return out


@inject_docs()
def loss(
    adata: AnnData,
    key: str = Key.uns.semst,
    *,
    components: Sequence[str] | None = None,
    log: bool | None = None,
    ax: Axes | None = None,
    return_ax: bool = False,
    show: bool | None = None,
    save: str | Path | None = None,
    title: str | None = None,
) -> Axes | None:
    """Plot the training curves recorded by :func:`semst_sc.tl.domains`.

    The total loss is drawn in black, each of its terms (ZINB reconstruction, correlation reduction,
    spatial regularisation) in colour, against the epoch.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`semst_sc.tl.domains`.
    key
        Key of the run's record in :attr:`anndata.AnnData.uns`; its ``'history'`` holds one array of
        values per loss term.
    components
        Which recorded terms to draw (e.g. ``['loss', 'zinb']``); all by default.
    log
        Logarithmic y axis. By default it is used when every drawn value is positive.
    ax
        Axes to draw into; a new figure is made when ``None``.
    return_ax
        Return the axes instead of ``None``.
    {show}
    save
        Path of a file to write the figure to; the format follows the extension.
    title
        Title of the panel.

    Returns
    -------
    The axes if ``return_ax=True``, else ``None``.
    """
    check_show(show, save)
    check_adata(adata)
    hist = _history(semst_result(adata, key), key)
    if components is not None:
        names = [components] if isinstance(components, str) else list(components)
        unknown = [n for n in names if n not in hist]
        if unknown:
            raise KeyError(
                f"no recorded loss term {unknown}; adata.uns[{key!r}]['history'] has {sorted(hist)}"
            )
        hist = {n: hist[n] for n in names}
    values = np.concatenate([v[np.isfinite(v)] for v in hist.values()])
    if log is None:
        log = bool(values.size) and bool(np.all(values > 0))
    elif log and not np.all(values > 0):
        raise ValueError("log=True needs positive values, but some recorded losses are zero or negative")

    fig, ax = new_axes(ax, figsize=(5.0, 3.5))
    colors = iter(SEMST_PALETTE)
    # the total first, in black and thicker; the terms after it in the order they were recorded
    for name in sorted(hist, key=lambda n: n != "loss"):
        y = hist[name]
        epochs = np.arange(1, y.size + 1)
        style = (
            {"color": "black", "lw": 2.0, "zorder": 3}
            if name == "loss"
            else {"color": next(colors), "lw": 1.2}
        )
        ax.plot(epochs, y, label=_LOSS_LABELS.get(name, name), **style)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title if title is not None else "Training loss")
    ax.legend(frameon=False, fontsize="small")
    ax.spines[["top", "right"]].set_visible(False)
    return finish(fig, ax, save=save, return_ax=return_ax, show=show)


@inject_docs()
def domain_selection(
    adata: AnnData,
    key: str = Key.uns.semst,
    *,
    ax: Axes | None = None,
    return_ax: bool = False,
    show: bool | None = None,
    save: str | Path | None = None,
    title: str | None = None,
) -> Axes | None:
    """Plot the curve used to estimate the number of domains.

    When :func:`semst_sc.tl.domains` runs with ``n_domains=None`` it clusters the embedding for a range
    of candidate numbers of domains, scores each clustering without labels (higher is better) and keeps
    the best; this draws that score against the number of domains and marks the chosen one.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`semst_sc.tl.domains` with ``n_domains=None``.
    key
        Key of the run's record in :attr:`anndata.AnnData.uns`; the curve is in its
        ``'domain_selection'`` entry.
    ax
        Axes to draw into; a new figure is made when ``None``.
    return_ax
        Return the axes instead of ``None``.
    {show}
    save
        Path of a file to write the figure to; the format follows the extension.
    title
        Title of the panel.

    Returns
    -------
    The axes if ``return_ax=True``, else ``None``.
    """
    check_show(show, save)
    check_adata(adata)
    rec = semst_result(adata, key)
    sel = rec.get("domain_selection")
    if not isinstance(sel, Mapping):
        raise KeyError(
            f"adata.uns[{key!r}] has no 'domain_selection': it is written when the number of domains is "
            "estimated; run semst.tl.domains(adata, n_domains=None) first"
        )
    for field in ("n_domains", "score"):
        if field not in sel:
            raise KeyError(
                f"adata.uns[{key!r}]['domain_selection'] lacks {field!r}: run semst.tl.domains again"
            )
    ks = np.asarray(sel["n_domains"], dtype=float).ravel()
    score = np.asarray(sel["score"], dtype=float).ravel()
    if ks.size != score.size or ks.size == 0:
        raise ValueError(
            f"adata.uns[{key!r}]['domain_selection'] has {ks.size} candidates but {score.size} scores"
        )
    criterion = str(sel.get("criterion", "score"))
    chosen = int(sel["chosen"]) if "chosen" in sel else int(ks[int(np.nanargmax(score))])

    fig, ax = new_axes(ax, figsize=(4.5, 3.2))
    ax.plot(ks, score, "-o", color=SEMST_PALETTE[0], ms=4, lw=1.5)
    hit = np.flatnonzero(ks == chosen)
    if hit.size:
        ax.axvline(chosen, color="grey", ls="--", lw=1)
        ax.plot(ks[hit], score[hit], "o", color=SEMST_PALETTE[3], ms=8, zorder=3, label=f"chosen: {chosen}")
        ax.legend(frameon=False, fontsize="small")
    ax.set_xticks(ks.astype(int))
    ax.set_xlabel("number of domains")
    ax.set_ylabel(f"{criterion} (higher is better)")
    ax.set_title(title if title is not None else f"Number of domains: {chosen}")
    ax.spines[["top", "right"]].set_visible(False)
    return finish(fig, ax, save=save, return_ax=return_ax, show=show)
