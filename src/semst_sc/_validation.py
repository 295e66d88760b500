"""Input checks that raise before any work is done, with messages that say how to fix the input.

Conventions: ``TypeError`` for a wrong type, ``KeyError`` for a missing slot (naming the function that
makes it), ``ValueError`` for bad values. No check modifies the AnnData it looks at.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral
from typing import Any

import numpy as np
from anndata import AnnData
from scipy import sparse

from ._constants import Key

# Elements checked per block when scanning the values of a count matrix, so that the temporary arrays of
# the checks stay small (a few tens of MB) however large the matrix is.
_BLOCK = 1 << 22


def check_anndata(adata: Any, *, fn: str, reads_x: bool = True) -> None:
    """Check that ``adata`` is a real (non-view) AnnData with unique names.

    Parameters
    ----------
    adata
        The object handed to a public function.
    fn
        Name of that function, used in the messages (``'semst.gr.spatial_graph'``).
    reads_x
        Whether the function reads the expression matrix; then an AnnData opened in backed mode, whose
        matrix stays on disk, is refused with the line that loads it.

    Raises
    ------
    TypeError
        ``adata`` is not an :class:`~anndata.AnnData`.
    ValueError
        ``adata`` is a view, in backed mode while ``reads_x``, or its ``obs_names`` / ``var_names`` are
        not unique.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(
            f"{fn} expects an anndata.AnnData, got {type(adata).__module__}.{type(adata).__name__}. "
            "Read your data with scanpy.read_h5ad / semst.datasets.read_visium first."
        )
    if adata.is_view:
        raise ValueError(
            f"{fn} got a view of an AnnData (adata[mask] without .copy()). Writing results into a view "
            "would silently copy it; call `.copy()` first, e.g. `adata = adata[mask].copy()`."
        )
    if reads_x:
        check_in_memory(adata, fn=fn)
    for axis, names, fix in (
        ("var_names", adata.var_names, "adata.var_names_make_unique()"),
        ("obs_names", adata.obs_names, "adata.obs_names_make_unique()"),
    ):
        if not names.is_unique:
            dup = names[names.duplicated()].unique()
            shown = ", ".join(map(str, dup[:5])) + (", ..." if len(dup) > 5 else "")
            raise ValueError(
                f"{fn}: adata.{axis} has {len(dup)} duplicated name(s) ({shown}). Make them unique with "
                f"`{fix}` before calling it."
            )


def check_in_memory(adata: AnnData, *, fn: str) -> None:
    """Refuse an AnnData in backed mode (its matrix stays on disk), with the line that loads it."""
    if adata.isbacked:
        raise ValueError(
            f"{fn} reads the expression matrix, but adata was opened in backed mode "
            "(read_h5ad(..., backed='r')) and its matrix stays on disk. Load it first: "
            "`adata = adata.to_memory()`, or read the file without backed=."
        )


def check_key(value: Any, name: str = "key_added") -> str:
    """A key to write under (``key_added`` and the like): a non-empty string."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty string, got {value!r}.")
    return value


def check_seed(seed: Any, name: str = "seed") -> int:
    """A random seed: an integer (``bool`` refused) in [0, 2**32), as numpy, torch and scikit-learn take."""
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"{name} must be an integer in [0, 2**32), got {seed!r}.")
    seed = int(seed)
    if not 0 <= seed < 2**32:
        raise ValueError(f"{name} must be in [0, 2**32), got {seed}.")
    return seed


def key_names(values: Any) -> set[str]:
    """A list of key names as semst-sc records store it (a list, or a string array after h5ad), as a set."""
    return {str(k) for k in np.asarray(values, dtype=object).ravel()}


#: The ``function`` entry of a ``tl.domains`` record, by which records under other keys of ``uns`` are found.
DOMAINS_RECORD = "semst.tl.domains"

#: Keys of ``uns`` that other semst-sc functions (or squidpy / scanpy) own: never a ``tl.domains`` record.
_RESERVED_UNS = {
    Key.uns.llm,
    Key.uns.spatial_graph,
    Key.uns.feature_graph,
    Key.uns.evaluation,
    Key.uns.preprocess,
    Key.uns.spatial,
}


def domains_records(adata: AnnData) -> dict[str, dict]:
    """The records ``tl.domains`` runs left in ``adata.uns``: ``uns['semst']`` and any key marked as one."""
    return {
        str(key): rec
        for key, rec in adata.uns.items()
        if isinstance(rec, dict) and (key == Key.uns.semst or rec.get("function") == DOMAINS_RECORD)
    }


def written_keys(adata: AnnData) -> dict[str, set[str]]:
    """The ``obs`` and ``obsm`` keys ``tl.domains`` / ``tl.recluster`` runs wrote (the defaults always count).

    Read from every run's record (see :func:`domains_records`), so a run kept under its own ``uns_key``
    still counts.
    """
    keys = {"obs": {Key.obs.domain}, "obsm": {Key.obsm.semst}}
    for run in domains_records(adata).values():
        stored = run.get("written_keys", {})
        for slot in keys:
            if isinstance(stored, dict) and slot in stored:
                keys[slot] |= key_names(stored[slot])
        if "domain_key" in run:
            keys["obs"].add(str(run["domain_key"]))
        if "embedding_key" in run:
            keys["obsm"].add(str(run["embedding_key"]))
        if isinstance(run.get("reclustered"), dict):
            keys["obs"].update(map(str, run["reclustered"]))
    return keys


def check_uns_key(adata: AnnData, uns_key: Any, fn: str) -> str:
    """``uns_key`` of ``tl.domains``: a name that holds no data of the user's or of another function."""
    check_key(uns_key, "uns_key")
    if uns_key in _RESERVED_UNS or uns_key.endswith("_colors"):
        raise ValueError(
            f"uns_key={uns_key!r} names a slot that another function writes (a graph's or the semantics' "
            f"record, a palette, squidpy's images); pass another one (the default is {Key.uns.semst!r})."
        )
    if uns_key in adata.uns and uns_key not in domains_records(adata):
        raise ValueError(
            f"{fn} would overwrite adata.uns[{uns_key!r}], which is not the record of a semst.tl.domains "
            f"run. Pass another uns_key=, or remove it first (`del adata.uns[{uns_key!r}]`) if it is to be "
            "replaced."
        )
    return uns_key


def check_not_users(
    adata: AnnData, slot: str, key: str, param: str, fn: str, ours: set[str] | None = None
) -> None:
    """Refuse to overwrite ``adata.<slot>[key]`` when semst-sc did not write it (an annotation, say).

    ``ours``: the keys of that slot the calling function may write again (default: those of
    :func:`written_keys`, the runs of ``tl.domains`` and ``tl.recluster``).
    """
    ours = written_keys(adata)[slot] if ours is None else ours
    if key in getattr(adata, slot) and key not in ours:
        raise ValueError(
            f"{fn} would overwrite adata.{slot}[{key!r}], which semst-sc did not write. Pass another "
            f"{param}=, or remove it first (`del adata.{slot}[{key!r}]`) if it is to be replaced."
        )


def check_choice(name: str, value: Any, options: Iterable[Any]) -> None:
    """Raise a ``ValueError`` listing the valid options when ``value`` is not one of them."""
    options = tuple(options)
    if value not in options:
        valid = ", ".join(repr(o) for o in options)
        raise ValueError(f"{name}={value!r} is not a valid choice; use one of {valid}.")


def check_n_hops(value: Any, name: str) -> int:
    """A non-negative integer number of smoothing passes (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(
            f"{name} must be a non-negative integer (0: no averaging; 2 for small imaging panels such as "
            f"osmFISH), got {value!r}."
        )
    return int(value)


def check_n_neighbors(n_obs: int, k: Any, what: str, param: str = "n_neighbors") -> int:
    """Check a neighbour count ``k`` against the number of spots ``n_obs``.

    Parameters
    ----------
    n_obs
        Number of spots the graph is built on (the smallest slice when slices are kept apart).
    k
        Requested number of neighbours.
    what
        What the neighbours are for, used in the message (``'the feature graph'``).
    param
        The caller's name for ``k``, which the message tells the user to lower.

    Returns
    -------
    ``k`` as a Python ``int``.
    """
    if isinstance(k, bool) or not isinstance(k, Integral):
        raise TypeError(f"the number of neighbours for {what} must be an integer, got {k!r}.")
    k = int(k)
    if k < 1:
        raise ValueError(f"the number of neighbours for {what} must be at least 1, got {k}.")
    if n_obs <= k:
        raise ValueError(
            f"{what} asks for {k} neighbours per spot but there are only {n_obs} spots; it needs at least "
            f"{k + 1}. Use fewer neighbours ({param} <= {max(n_obs - 1, 0)}) or more spots."
        )
    return k


def check_spatial(adata: AnnData, spatial_key: str = Key.obsm.spatial) -> np.ndarray:
    """Return the spot coordinates of ``adata`` as a float64 array, checking shape and values.

    Raises
    ------
    KeyError
        ``adata.obsm[spatial_key]`` is missing.
    TypeError
        The coordinates are not numeric.
    ValueError
        The coordinates are not N x 2 or N x 3, or contain NaN / infinite values.
    """
    if spatial_key not in adata.obsm:
        present = ", ".join(map(repr, adata.obsm.keys())) or "none"
        raise KeyError(
            f"no spatial coordinates in adata.obsm[{spatial_key!r}] (obsm keys present: {present}). Put an "
            f"N x 2 array of spot positions there, e.g. `adata.obsm[{spatial_key!r}] = "
            "adata.obs[['x', 'y']].to_numpy()`; 10x Visium folders read with semst.datasets.read_visium "
            "or squidpy.read.visium have it already."
        )
    coords = adata.obsm[spatial_key]
    coords = coords.to_numpy() if hasattr(coords, "to_numpy") else coords
    if sparse.issparse(coords):
        raise TypeError(
            f"adata.obsm[{spatial_key!r}] is a sparse matrix; store the coordinates as a dense array."
        )
    coords = np.asarray(coords)
    if coords.dtype.kind not in "iuf":
        raise TypeError(
            f"adata.obsm[{spatial_key!r}] must hold numbers, got dtype {coords.dtype}. Convert it with "
            f"`adata.obsm[{spatial_key!r}] = adata.obsm[{spatial_key!r}].astype(float)`."
        )
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ValueError(
            f"adata.obsm[{spatial_key!r}] has shape {coords.shape}; spatial coordinates must be N x 2 "
            "(x, y) or N x 3 (x, y, z)."
        )
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        raise ValueError(
            f"adata.obsm[{spatial_key!r}] has NaN or infinite coordinates for {int(bad.sum())} spot(s) "
            f"(first: {adata.obs_names[np.flatnonzero(bad)[0]]!r}). Drop those spots, e.g. "
            f"`adata = adata[np.isfinite(adata.obsm[{spatial_key!r}]).all(1)].copy()`."
        )
    return coords.astype(np.float64, copy=False)


def check_matrix(value: Any, *, name: str, n_obs: int, fix: str) -> np.ndarray:
    """Return ``value`` (an array, a sparse matrix or a data frame) as a dense N x D array of numbers.

    Raises when it is not numeric, not 2-D with ``n_obs`` rows and at least one column, or not finite.

    Parameters
    ----------
    value
        The matrix, one row per spot.
    name
        How the messages name it, e.g. ``"adata.obsm['X_llm']"`` or ``"`h_llm`"``.
    n_obs
        Expected number of rows.
    fix
        What the user should do, appended to the messages about shape and non-finite values.
    """
    value = value.to_numpy() if hasattr(value, "to_numpy") else value
    value = value.toarray() if sparse.issparse(value) else np.asarray(value)
    if value.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold numbers, got dtype {value.dtype}.")
    if value.ndim != 2 or value.shape[0] != n_obs or value.shape[1] < 1:
        raise ValueError(
            f"{name} has shape {value.shape}; expected {n_obs} rows (one row per spot, in the order of "
            f"adata.obs_names) and at least one column. {fix}"
        )
    if not np.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite values. {fix}")
    return value


def check_obsm(adata: AnnData, key: str, *, n_obs: int, made_by: str) -> np.ndarray:
    """Return ``adata.obsm[key]`` as a dense array after checking it exists, has ``n_obs`` rows and no NaN.

    Parameters
    ----------
    adata
        The AnnData.
    key
        Key in :attr:`anndata.AnnData.obsm`.
    n_obs
        Expected number of rows.
    made_by
        The function that writes this key, named in the ``KeyError``.
    """
    if key not in adata.obsm:
        raise KeyError(f"adata.obsm[{key!r}] is missing; it is made by {made_by} (run it first).")
    return check_matrix(
        adata.obsm[key], name=f"adata.obsm[{key!r}]", n_obs=n_obs, fix=f"Recompute it with {made_by}."
    )


def _blocks(values: np.ndarray) -> Iterable[np.ndarray]:
    for start in range(0, values.size, _BLOCK):
        yield values[start : start + _BLOCK]


#: What to do with a matrix that is already normalised, by default (``tl.domains``' own way out).
NORMALISED_HINT = "for a matrix already normalised, pass preprocess=False to semst.tl.domains"


def _counts_advice(
    adata: AnnData | None, layer_param: str = "layer", normalised: str = NORMALISED_HINT
) -> str:
    """Where the counts may be instead: the layers present, ``adata.raw``, or what takes normalised data."""
    advice = "semst expects raw integer UMI counts in adata.X"
    layers = [] if adata is None else list(adata.layers.keys())
    if layers:
        advice += (
            f"; pass {layer_param}=<name> if a layer holds them (layers: {', '.join(map(repr, layers[:8]))})"
        )
    else:
        advice += f"; pass {layer_param}='counts' (the layer's name) if they are in a layer"
    if adata is not None and adata.raw is not None:
        advice += (
            "; adata.raw is set: if it holds the counts, run on adata.raw.to_adata() (same spots and "
            "coordinates)"
        )
    return advice + f"; or, {normalised}"


def _check_count_values(values: np.ndarray, where: str, advice: str) -> None:
    """Raise on NaN, infinite, negative or non-integer entries of a flat array of stored values.

    ``advice`` (from :func:`_counts_advice`) ends each message: where the counts may be instead.
    """
    if values.dtype.kind in "iu":
        if values.dtype.kind == "i" and values.size and values.min() < 0:
            raise ValueError(f"{where} has negative values. {advice}.")
        return
    if values.dtype.kind != "f":
        raise TypeError(f"{where} has dtype {values.dtype}; counts must be numbers. {advice}.")
    for block in _blocks(values):
        if not np.isfinite(block).all():
            raise ValueError(f"{where} contains NaN or infinite values. {advice}.")
        if (block < 0).any():
            raise ValueError(f"{where} has negative values (log-transformed or scaled data?). {advice}.")
        if (block != np.floor(block)).any():
            raise ValueError(
                f"{where} has non-integer values (normalised or log-transformed data?). {advice}."
            )


def get_counts(
    adata: AnnData, layer: str | None = None, *, layer_param: str = "layer", normalised: str = NORMALISED_HINT
) -> sparse.csr_matrix:
    """Return the raw counts of ``adata`` as a float32 CSR matrix, after checking them.

    The check scans only the stored values of a sparse matrix, in blocks, so it stays cheap on millions of
    spots. When the counts are already float32 CSR the returned matrix shares memory with ``adata``:
    treat it as read-only. ``adata`` is never modified.

    Parameters
    ----------
    adata
        The AnnData.
    layer
        Layer with the counts; ``None`` reads ``adata.X``.
    layer_param, normalised
        For the messages: the caller's name for ``layer``, and what the caller offers for a matrix that is
        already normalised (a clause starting "for a matrix already normalised, ...").

    Raises
    ------
    KeyError
        ``layer`` is not a layer of ``adata``.
    TypeError
        The matrix does not hold numbers.
    ValueError
        NaN, infinite, negative or non-integer values; no genes or no spots; spots without any count.
    """
    if layer is None:
        X, where = adata.X, "adata.X"
        if X is None:
            raise ValueError(
                f"adata.X is empty (None); put the raw counts in adata.X or pass {layer_param}=."
            )
    else:
        if layer not in adata.layers:
            present = ", ".join(map(repr, adata.layers.keys())) or "none"
            raise KeyError(
                f"layer {layer!r} not found in adata.layers (layers present: {present}). Pass {layer_param}=None "
                "to use adata.X."
            )
        X, where = adata.layers[layer], f"adata.layers[{layer!r}]"
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"{where} has shape {adata.shape}; it needs at least one spot and one gene.")

    advice = _counts_advice(adata, layer_param, normalised)
    if sparse.issparse(X):
        _check_count_values(X.data, where, advice)
        counts = sparse.csr_matrix(X) if X.format != "csr" else X
    else:
        arr = np.asarray(X)
        _check_count_values(arr.reshape(-1), where, advice)
        counts = sparse.csr_matrix(arr)
    if counts.dtype != np.float32:
        counts = counts.astype(np.float32)
    if not isinstance(counts, sparse.csr_matrix):  # csr_array or another subclass: same buffers, our type
        counts = sparse.csr_matrix(counts)

    totals = np.asarray(counts.sum(axis=1)).ravel()
    empty = totals <= 0
    if empty.any():
        n_empty = int(empty.sum())
        first = adata.obs_names[np.flatnonzero(empty)[0]]
        raise ValueError(
            f"{n_empty} of {adata.n_obs} spots have no counts at all in {where} (first: {first!r}). "
            "Remove them first, e.g. `sc.pp.filter_cells(adata, min_counts=1)`."
        )
    return counts
