"""Shared checks and figure handling of :mod:`semst_sc.pl` (matplotlib only: no torch here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._constants import Key

#: What to tell the user for each slot that semst-sc itself writes.
_MAKERS = {
    Key.obs.domain: "semst.tl.domains",
    Key.obsm.semst: "semst.tl.domains",
    Key.uns.semst: "semst.tl.domains",
    Key.obsm.llm: "semst.tl.semantic_embedding",
}


def check_adata(adata: Any) -> None:
    if not isinstance(adata, AnnData):
        raise TypeError(f"expected an AnnData object, got {type(adata).__name__}")


def missing_key_error(where: str, key: str) -> KeyError:
    """A KeyError naming the slot and the function that writes it."""
    maker = _MAKERS.get(key)
    if maker is not None:
        hint = f"run {maker} first"
    elif where == "obs":
        hint = "pass the name of an existing column of adata.obs"
    else:
        hint = f"pass the name of an existing key of adata.{where}"
    return KeyError(f"adata.{where}[{key!r}] not found: {hint}")


def check_obs(adata: AnnData, key: str) -> None:
    if not isinstance(key, str):
        raise TypeError(f"an obs key must be a string, got {type(key).__name__}")
    if key not in adata.obs:
        raise missing_key_error("obs", key)


def check_obsm(adata: AnnData, key: str) -> None:
    if not isinstance(key, str):
        raise TypeError(f"an obsm key must be a string, got {type(key).__name__}")
    if key not in adata.obsm:
        raise missing_key_error("obsm", key)


def check_color(adata: AnnData, key: str) -> None:
    """``key`` must be an obs column or a gene name (what squidpy and scanpy can colour by)."""
    if not isinstance(key, str):
        raise TypeError(f"color must be a string or a list of strings, got {type(key).__name__}")
    if key in adata.obs or key in adata.var_names:
        return
    if key in _MAKERS:
        raise missing_key_error("obs", key)
    raise KeyError(f"color={key!r} is neither a column of adata.obs nor a gene in adata.var_names")


def as_key_list(color: str | Sequence[str] | None, name: str = "color") -> list[str]:
    if color is None:
        raise ValueError(f"{name} must name at least one key")
    if isinstance(color, str):
        keys = [color]
    elif isinstance(color, Sequence):
        keys = list(color)
    else:
        raise TypeError(f"{name} must be a string or a list of strings, got {type(color).__name__}")
    if not keys:
        raise ValueError(f"{name} must name at least one key")
    return keys


def semst_result(adata: AnnData, key: str) -> Mapping:
    """``adata.uns[key]``, the record that :func:`semst_sc.tl.domains` writes."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a string, got {type(key).__name__}")
    if key not in adata.uns:
        raise KeyError(f"adata.uns[{key!r}] not found: run semst.tl.domains first")
    rec = adata.uns[key]
    if not isinstance(rec, Mapping):
        raise TypeError(
            f"adata.uns[{key!r}] is a {type(rec).__name__}, not the dict written by semst.tl.domains"
        )
    return rec


def new_axes(ax: Axes | None, figsize: tuple[float, float] | None = None) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    return ax.figure, ax


def check_show(show: Any, save: Any = None) -> None:
    """Refuse, before anything is drawn, a ``show`` other than True, False or None and a ``save`` path in
    a format matplotlib cannot write."""
    if show is not None and not isinstance(show, bool):
        raise TypeError(f"show must be True, False or None, got {show!r}.")
    if save is None:
        return
    if not isinstance(save, str | Path):
        raise TypeError(f"save must be a file path (str or pathlib.Path), got {type(save).__name__}.")
    formats = _supported_formats()
    ext = Path(save).suffix.lower().lstrip(".")
    if ext and ext not in formats:  # no extension: matplotlib writes its default format (png)
        raise ValueError(
            f"save={str(save)!r}: .{ext} is not an image format matplotlib writes; end the name with one of "
            f"{', '.join('.' + f for f in sorted(formats))}."
        )


def _supported_formats() -> set[str]:
    from matplotlib.backend_bases import FigureCanvasBase

    return set(FigureCanvasBase.get_supported_filetypes())


def finish(
    fig: Figure,
    axes: Axes | Sequence[Axes],
    *,
    save: str | Path | None,
    return_ax: bool,
    show: bool | None = None,
):
    """Write the figure to ``save`` (a path; the format follows its extension) and return the axes if asked.

    ``show`` is scanpy's: ``True`` shows the figure, ``False`` returns the axes (as ``return_ax=True``).
    Both ``show`` and ``save`` were checked by :func:`check_show` before the figure was drawn.
    """
    if save is not None:
        path = Path(save)
        if path.parent != Path() and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    if show:
        plt.show()
    if return_ax or show is False:
        return axes
    return None
