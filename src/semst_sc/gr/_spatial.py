"""Spatial neighbour graph, built by squidpy, with the three modes SemST uses.

- ``'radius'``: spots closer than ``radius`` (coordinate units) are neighbours. Without a radius it is
  derived from the data: :data:`RADIUS_FACTOR` times the median nearest-neighbour distance. On 10x Visium
  (spot pitch about 137 full-resolution pixels) that is about 562 px, the reference's 560 px: 4 spot
  pitches, about 58 neighbours per spot (60 inside the tissue, fewer at its edge). The factor sits
  between the lattice shells at 4 and sqrt(19) = 4.36 pitches, so rounding of pixel coordinates cannot
  flip a whole shell in or out.
- ``'knn'``: every spot's ``n_neighbors`` nearest spots, made symmetric by union (so a spot can have more
  than ``n_neighbors`` neighbours).
- ``'adaptive'`` (METHOD.md 1.2): the smallest distance threshold ``t`` at which every spot has more than
  2 neighbours and some spot has more than ``n_neighbors`` (the spot itself not counted). With
  ``d3(i)`` the distance from spot ``i`` to its 3rd nearest spot and ``dk1(i)`` the distance to its
  ``(n_neighbors + 1)``-th, the first condition holds exactly when ``t >= max_i d3(i)`` and the second
  exactly when ``t >= min_i dk1(i)``, so ``t = max(max_i d3(i), min_i dk1(i))``: one KD-tree query of
  ``n_neighbors + 1`` neighbours per spot, no search loop and nothing quadratic. The radius graph at
  ``t`` is then built by squidpy.

Multi-slice data: with ``library_key`` every slice gets its own graph (squidpy's block-diagonal
combination), so slices never connect; derived radii and thresholds use within-slice distances only.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scipy import sparse
from scipy.spatial import cKDTree

from .._constants import SPATIAL_MODES, Default, Key
from .._docs import inject_docs
from .._utils import import_squidpy, user_stacklevel
from .._validation import check_anndata, check_choice, check_key, check_n_neighbors, check_spatial

#: Default radius, in median nearest-neighbour distances (see the module docstring).
RADIUS_FACTOR = 4.1
#: A graph whose mean degree would exceed this is refused before it is built (it would need about
#: ``12 * N * degree`` bytes; a wrong unit or an outlier spot is the usual cause).
MAX_MEAN_DEGREE = 1000
_DEGREE_SAMPLE = 2000
_BOUNDARY_SLACK = 1e-9


def _library_codes(adata: AnnData, library_key: str | None) -> tuple[np.ndarray, pd.Index]:
    if library_key is None:
        return np.zeros(adata.n_obs, dtype=np.int64), pd.Index(["all"])
    if not isinstance(library_key, str):
        raise TypeError(f"library_key must be a column name (str), got {library_key!r}.")
    if library_key not in adata.obs:
        cols = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        raise KeyError(f"library_key={library_key!r} is not a column of adata.obs (columns: {cols}).")
    col = adata.obs[library_key]
    if col.isna().any():
        raise ValueError(
            f"adata.obs[{library_key!r}] has {int(col.isna().sum())} missing value(s); every spot needs a slice."
        )
    cat = pd.Categorical(col)
    codes = np.asarray(cat.codes, dtype=np.int64)
    used = np.unique(codes)
    return np.searchsorted(used, codes), pd.Index(cat.categories[used].astype(str))


def _groups(codes: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(codes.max() + 2))
    return [order[bounds[g] : bounds[g + 1]] for g in range(codes.max() + 1)]


def _kth_distances(coords: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Distance from every spot to its 1st..k-th nearest other spot of the same slice (N x k)."""
    out = np.empty((coords.shape[0], k), dtype=np.float64)
    for idx in _groups(codes):
        dist, _ = cKDTree(coords[idx]).query(coords[idx], k=k + 1)
        out[idx] = dist[:, 1:]
    return out


def median_nn_distance(coords: np.ndarray, codes: np.ndarray | None = None) -> float:
    """Median distance from a spot to its nearest other spot (within its slice).

    Parameters
    ----------
    coords
        N x 2 or N x 3 coordinates.
    codes
        Integer slice code of every spot (0 .. n_slices - 1); ``None``: one slice.

    Returns
    -------
    The median nearest-neighbour distance, in coordinate units (the spot pitch on a regular array).
    """
    codes = np.zeros(coords.shape[0], dtype=np.int64) if codes is None else codes
    return float(np.median(_kth_distances(coords, codes, 1)[:, 0]))


def adaptive_threshold(coords: np.ndarray, n_neighbors: int, codes: np.ndarray | None = None) -> float:
    """Smallest distance ``t`` with every spot having > 2 neighbours and some spot > ``n_neighbors``.

    Neighbours are spots of the same slice within distance ``t`` (inclusive), the spot itself excluded.
    With ``d3(i)`` the distance of spot ``i`` to its 3rd nearest spot and ``dk1(i)`` the distance to its
    ``(n_neighbors + 1)``-th, ``t = max(max_i d3(i), min_i dk1(i))`` exactly; one KD-tree query per spot.

    Parameters
    ----------
    coords
        N x 2 or N x 3 coordinates.
    n_neighbors
        Some spot must have more than this many neighbours.
    codes
        Integer slice code of every spot (0 .. n_slices - 1); ``None``: one slice.

    Returns
    -------
    The threshold ``t``, in coordinate units.

    Raises
    ------
    ValueError
        A slice has fewer than 4 spots, or no slice has ``n_neighbors + 2``.
    """
    codes = np.zeros(coords.shape[0], dtype=np.int64) if codes is None else codes
    groups = _groups(codes)
    sizes = [g.size for g in groups]
    if min(sizes) < 4:
        raise ValueError(
            f"the adaptive threshold needs every spot to have 3 neighbours, but a slice has only {min(sizes)} "
            "spot(s). Drop that slice or use mode='knn' / mode='radius'."
        )
    if max(sizes) < n_neighbors + 2:
        raise ValueError(
            f"the adaptive threshold needs some spot with more than n_neighbors={n_neighbors} neighbours, but "
            f"the largest slice has {max(sizes)} spots. Lower n_neighbors."
        )
    d3_max, dk1_min = 0.0, np.inf
    for idx in groups:
        k_here = min(n_neighbors + 1, idx.size - 1)
        dist, _ = cKDTree(coords[idx]).query(coords[idx], k=k_here + 1)  # column 0 is the spot itself
        d3_max = max(d3_max, float(dist[:, 3].max()))
        if k_here == n_neighbors + 1:
            dk1_min = min(dk1_min, float(dist[:, n_neighbors + 1].min()))
    return max(d3_max, dk1_min)


def _mean_degree_estimate(coords: np.ndarray, codes: np.ndarray, radius: float) -> float:
    """Mean number of same-slice neighbours within ``radius``, from up to 2000 evenly spread spots."""
    n = coords.shape[0]
    sample = np.unique(np.linspace(0, n - 1, min(n, _DEGREE_SAMPLE)).astype(np.int64))
    total = 0
    for idx in _groups(codes):
        chosen = np.intersect1d(idx, sample, assume_unique=True)
        if chosen.size:
            total += int(
                cKDTree(coords[idx]).query_ball_point(coords[chosen], radius, return_length=True).sum()
            )
    return total / sample.size - 1.0


def _check_degree(coords: np.ndarray, codes: np.ndarray, radius: float, why: str) -> None:
    degree = _mean_degree_estimate(coords, codes, radius)
    if degree > MAX_MEAN_DEGREE:
        raise ValueError(
            f"{why} {radius:.4g} would give about {degree:.0f} neighbours per spot "
            f"(limit {MAX_MEAN_DEGREE}); the graph would not fit in memory for {coords.shape[0]} spots. Check "
            "the units of the coordinates and the radius, remove outlier spots, or use mode='knn'."
        )


def _squidpy_graph(
    coords: np.ndarray, codes: np.ndarray, *, radius: float | None, n_neighbors: int | None
) -> tuple[sparse.csr_matrix, sparse.csr_matrix, dict[str, Any]]:
    """Run squidpy on a throwaway AnnData holding only the coordinates (and the slice of each spot)."""
    sq = import_squidpy()

    light = AnnData(
        obs=pd.DataFrame({"library": pd.Categorical(codes)}, index=pd.RangeIndex(codes.size).astype(str)),
        obsm={Key.obsm.spatial: coords},
    )
    library_key = "library" if codes.max() > 0 else None
    # squidpy logs "Creating graph ..." through spatialdata's logger at INFO on every call; we log our own
    chatty = logging.getLogger("spatialdata._logging")
    level = chatty.level
    chatty.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            if not hasattr(sq.gr, "spatial_neighbors_radius"):
                # squidpy < 1.8 (e.g. the DGL environment's 1.6): one function, (conn, dist) with copy=True
                kw = {"radius": float(radius)} if radius is not None else {"n_neighs": int(n_neighbors)}
                conn, dist = sq.gr.spatial_neighbors(
                    light,
                    coord_type="generic",
                    library_key=library_key,
                    spatial_key=Key.obsm.spatial,
                    copy=True,
                    **kw,
                )
                params = {
                    "coord_type": "generic",
                    **{("n_neighbors" if k == "n_neighs" else k): v for k, v in kw.items()},
                }
                return sparse.csr_matrix(conn), sparse.csr_matrix(dist), params
            if radius is not None:
                res = sq.gr.spatial_neighbors_radius(
                    light,
                    radius=float(radius),
                    library_key=library_key,
                    spatial_key=Key.obsm.spatial,
                    copy=True,
                )
                params = {"coord_type": "generic", "radius": float(radius)}
            else:
                res = sq.gr.spatial_neighbors_knn(
                    light,
                    n_neighs=int(n_neighbors),
                    library_key=library_key,
                    spatial_key=Key.obsm.spatial,
                    copy=True,
                )
                params = {"coord_type": "generic", "n_neighbors": int(n_neighbors)}
    finally:
        chatty.setLevel(level)
    return sparse.csr_matrix(res.connectivities), sparse.csr_matrix(res.distances), params


def _symmetrize(
    conn: sparse.csr_matrix, dist: sparse.csr_matrix
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Union-symmetric 0/1 float32 connectivities without self loops, and the matching distances."""
    conn = conn.maximum(conn.T).tocsr()
    conn.setdiag(0)
    conn.eliminate_zeros()
    conn.data[:] = 1.0
    conn = conn.astype(np.float32)
    conn.sort_indices()
    dist = dist.maximum(dist.T).tocsr()
    dist.setdiag(0)
    dist.eliminate_zeros()
    dist.sort_indices()
    return conn, dist


def _radius_arg(radius: Any) -> float | None:
    if radius is None:
        return None
    if isinstance(radius, bool) or not isinstance(radius, int | float | np.number):
        raise TypeError(f"radius must be a number (in the units of the coordinates), got {radius!r}.")
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius must be a positive number, got {radius!r}.")
    return float(radius)


def spatial_graph_arrays(
    coords: np.ndarray,
    *,
    mode: str = "radius",
    radius: float | None = None,
    n_neighbors: int = Default.spatial_k,
    library: np.ndarray | pd.Series | None = None,
) -> tuple[sparse.csr_matrix, sparse.csr_matrix, dict[str, Any]]:
    """Build the spatial graph from a coordinate array, through squidpy.

    Parameters
    ----------
    coords
        N x 2 or N x 3 coordinates.
    mode, radius, n_neighbors
        See :func:`semst_sc.gr.spatial_graph`.
    library
        Slice of every spot (any labels); slices never connect. ``None``: one slice.

    Returns
    -------
    ``(connectivities, distances, params)``: CSR, symmetric, 0/1 float32 connectivities without self loops;
    the Euclidean distances of the same edges; the parameters used (``mode``, ``radius``,
    ``n_neighbors``, ``mean_degree``, ...).
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ValueError(f"coords has shape {coords.shape}; need N x 2 or N x 3.")
    if not np.isfinite(coords).all():
        raise ValueError("coords has NaN or infinite values.")
    if library is None:
        codes = np.zeros(coords.shape[0], dtype=np.int64)
    else:
        lib = pd.Series(np.asarray(library))
        if lib.size != coords.shape[0]:
            raise ValueError(f"library has {lib.size} entries for {coords.shape[0]} spots.")
        if lib.isna().any():
            raise ValueError("library has missing values; every spot needs a slice.")
        codes = pd.factorize(lib, sort=True)[0].astype(np.int64)
    return _build(coords, codes, mode=mode, radius=radius, n_neighbors=n_neighbors)


def _build(
    coords: np.ndarray, codes: np.ndarray, *, mode: str, radius: Any, n_neighbors: Any
) -> tuple[sparse.csr_matrix, sparse.csr_matrix, dict[str, Any]]:
    check_choice("mode", mode, SPATIAL_MODES)
    radius = _radius_arg(radius)
    if radius is not None and mode != "radius":
        raise ValueError(f"radius is only used with mode='radius' (got mode={mode!r}); leave it as None.")
    sizes = np.bincount(codes)
    info: dict[str, Any] = {"mode": mode}
    if mode == "knn":
        k = check_n_neighbors(int(sizes.min()), n_neighbors, "the spatial kNN graph (in its smallest slice)")
        conn, dist, params = _squidpy_graph(coords, codes, radius=None, n_neighbors=k)
    else:
        if mode == "radius":
            if radius is None:
                if sizes.min() < 2:
                    raise ValueError(
                        "a slice has a single spot: no nearest-neighbour distance to derive a radius."
                    )
                pitch = median_nn_distance(coords, codes)
                if pitch <= 0:
                    raise ValueError(
                        "the median nearest-neighbour distance is 0 (many spots share coordinates). If the "
                        "data hold several slices with the same coordinates, pass library_key=<the obs "
                        "column naming each spot's slice>; otherwise give the radius yourself (in coordinate "
                        "units): semst.gr.spatial_graph(adata, radius=...), whose graph tl.domains reuses."
                    )
                radius = RADIUS_FACTOR * pitch
                info.update(
                    radius_rule=f"{RADIUS_FACTOR} x median nearest-neighbour distance", median_nn=pitch
                )
                why = "the derived radius"
            else:
                why = "radius"
        else:
            k = check_n_neighbors(int(sizes.max()), n_neighbors, "the adaptive threshold")
            # the threshold is a distance between two spots: widen it by a relative 1e-9 so that squidpy's
            # own distance computation, which may differ in the last bit, keeps that pair
            radius = adaptive_threshold(coords, k, codes) * (1 + _BOUNDARY_SLACK)
            info["n_neighbors"] = k
            why = "the adaptive threshold"
        _check_degree(coords, codes, radius, why)
        conn, dist, params = _squidpy_graph(coords, codes, radius=radius, n_neighbors=None)
    conn, dist = _symmetrize(conn, dist)
    degree = np.diff(conn.indptr)
    params.update(info)
    params.update(
        mean_degree=float(degree.mean()),
        min_degree=int(degree.min()),
        max_degree=int(degree.max()),
        n_slices=int(sizes.size),
    )
    n_isolated = int((degree == 0).sum())
    if n_isolated:
        warnings.warn(
            f"{n_isolated} of {degree.size} spots have no spatial neighbour (mode={mode!r}, "
            f"radius={params.get('radius', 'n/a')}); graph convolutions will see only their own expression. "
            "Use a larger radius, mode='adaptive' or mode='knn' (in tl.domains: spatial_mode='adaptive' or "
            "'knn').",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return conn, dist, params


def _keys(key_added: str) -> tuple[str, str, str]:
    return f"{key_added}_connectivities", f"{key_added}_distances", f"{key_added}_neighbors"


@inject_docs()
def spatial_graph(
    adata: AnnData,
    *,
    mode: str = "radius",
    radius: float | None = None,
    n_neighbors: int = Default.spatial_k,
    library_key: str | None = None,
    spatial_key: str = Key.obsm.spatial,
    key_added: str = "spatial",
    copy: bool = False,
) -> AnnData | None:
    """Build the spatial neighbour graph with squidpy (0/1, symmetric, no self loops).

    ``mode='radius'`` connects spots closer than ``radius`` (in the coordinates' own units); without a
    radius, 4.1 x the median nearest-neighbour distance is used (on 10x Visium about 560 full-resolution
    pixels, the reference's setting: about 58 neighbours per spot). ``mode='knn'`` connects every spot to
    its ``n_neighbors`` nearest spots and symmetrises by union (the choice for single-cell platforms such
    as STARmap). ``mode='adaptive'`` uses the smallest distance threshold at which every spot has more
    than 2 neighbours and some spot more than ``n_neighbors`` (computed exactly from each spot's 3rd and
    ``n_neighbors + 1``-th neighbour distances). Raises before writing anything when the input is wrong
    or the graph would be absurdly dense; warns when spots end up without a neighbour.

    Parameters
    ----------
    {adata}
    mode
        ``'radius'``, ``'knn'`` or ``'adaptive'``.
    radius
        Neighbourhood radius for ``mode='radius'``, in coordinate units; ``None`` derives it from the data.
    n_neighbors
        ``k`` of ``mode='knn'`` and of ``mode='adaptive'``.
    {library_key}
    {spatial_key}
    key_added
        Prefix of the keys written (squidpy's convention).
    {copy}

    Returns
    -------
    With ``copy=True`` a new AnnData, else ``None``. Writes

    - ``obsp['{key_added}_connectivities']`` - CSR float32 0/1 adjacency;
    - ``obsp['{key_added}_distances']`` - CSR Euclidean lengths of the same edges;
    - ``uns['{key_added}_neighbors']`` - ``connectivities_key``, ``distances_key`` and ``params``
      (squidpy's parameters plus ``mode``, the ``radius`` used, ``mean_degree`` and more).
    """
    check_anndata(adata, fn="semst.gr.spatial_graph", reads_x=False)
    check_key(key_added)
    coords = check_spatial(adata, spatial_key)
    codes, libraries = _library_codes(adata, library_key)
    sizes = np.bincount(codes, minlength=libraries.size)
    if library_key is not None and mode == "radius" and radius is None and (sizes < 2).any():
        lonely = list(libraries[sizes < 2][:5])
        raise ValueError(
            f"{int((sizes < 2).sum())} slice(s) of adata.obs[{library_key!r}] hold a single spot "
            f"({', '.join(map(repr, lonely))}): no neighbour distance to derive the radius from. Drop them, "
            f"e.g. adata = adata[~adata.obs[{library_key!r}].isin({lonely!r})].copy(), or give the radius "
            "yourself: semst.gr.spatial_graph(adata, radius=..., library_key=...)."
        )
    start = logg.info(
        f"building the spatial graph ({mode}) on {adata.n_obs} spots, {libraries.size} slice(s)"
    )
    conn, dist, params = _build(coords, codes, mode=mode, radius=radius, n_neighbors=n_neighbors)
    if library_key is not None:
        params["library_key"] = library_key
    conn_key, dist_key, uns_key = _keys(key_added)
    target = adata.copy() if copy else adata
    target.obsp[conn_key] = conn
    target.obsp[dist_key] = dist
    target.uns[uns_key] = {"connectivities_key": conn_key, "distances_key": dist_key, "params": params}
    logg.info(
        f"    finished: mean degree {params['mean_degree']:.1f}",
        time=start,
        deep=f"added\n    'obsp[{conn_key!r}]', 'obsp[{dist_key!r}]', 'uns[{uns_key!r}]'",
    )
    return target if copy else None
