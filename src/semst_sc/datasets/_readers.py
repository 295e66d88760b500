"""Readers for data users have on disk: an h5ad file, a 10x Space Ranger (Visium) output folder."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from .._constants import Key
from .._utils import import_squidpy, user_stacklevel

_POSITION_FILES = ("tissue_positions.csv", "tissue_positions_list.csv")
_IMAGES = ("tissue_hires_image.png", "tissue_lowres_image.png")
_SPATIAL_DIR = "spatial"
_POSITION_COLUMNS = ("in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres")


def read_h5ad(path: str | os.PathLike) -> AnnData:
    """Read an ``.h5ad`` file, with clear errors for a missing file or one that is not h5ad.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    The AnnData stored in the file.
    """
    import anndata as ad
    import h5py

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no file at {path}; check the path (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder, not an .h5ad file; for a 10x Space Ranger folder use "
            "semst.datasets.read_visium."
        )
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path} is not an HDF5 file, so not an .h5ad; read other formats with scanpy (sc.read_csv, "
            "sc.read_10x_h5, ...) or semst.datasets.read_visium for a Space Ranger folder."
        )
    try:
        return ad.read_h5ad(path)
    except Exception as e:  # an HDF5 file that is not an AnnData (e.g. a 10x .h5 matrix)
        raise ValueError(
            f"{path} is an HDF5 file but could not be read as AnnData ({type(e).__name__}: {e}). A 10x "
            "filtered_feature_bc_matrix.h5 is read with sc.read_10x_h5 or, with its spatial folder, "
            "semst.datasets.read_visium."
        ) from e


def _read_positions(file: Path) -> pd.DataFrame:
    """Space Ranger tissue positions (with a header since Space Ranger 2.0, without before)."""
    with open(file) as fh:
        first = fh.readline().split(",")[0].strip().lower()
    table = pd.read_csv(file, header=0 if first == "barcode" else None, index_col=0)
    if table.shape[1] != len(_POSITION_COLUMNS):
        raise ValueError(
            f"{file} has {table.shape[1] + 1} columns; a Space Ranger tissue positions file has 6 (barcode, "
            "in_tissue, array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres)."
        )
    table.columns = list(_POSITION_COLUMNS)
    table.index = table.index.astype(str)
    return table


def _library_id(h5: Path, given: str | None, folder: Path) -> str:
    if given is not None:
        return str(given)
    import h5py

    with h5py.File(h5, "r") as f:
        ids = f.attrs.get("library_ids")
    if ids is not None and len(ids):
        first = ids[0]
        return first.decode() if isinstance(first, bytes) else str(first)
    return folder.resolve().name


def read_visium(
    path: str | os.PathLike,
    *,
    counts_file: str = "filtered_feature_bc_matrix.h5",
    library_id: str | None = None,
    load_images: bool = True,
) -> AnnData:
    """Read a 10x Genomics Visium (Space Ranger ``outs``) folder, through squidpy's reader.

    Parameters
    ----------
    path
        The folder holding ``counts_file`` and ``spatial/`` (``tissue_positions.csv`` or
        ``tissue_positions_list.csv``, ``scalefactors_json.json``, the tissue images).
    counts_file
        The count matrix, ``filtered_feature_bc_matrix.h5`` (spots under tissue) by default.
    library_id
        Name of the slice in ``uns['spatial']``; by default the one recorded in the matrix file, else the
        folder's name.
    load_images
        Also load the hires / lowres tissue images (skipped, with a warning, when they are absent).

    Returns
    -------
    AnnData with raw counts in ``X``, gene symbols as unique ``var_names`` (Ensembl ids in
    ``var['gene_ids']``), ``obsm['spatial']`` (full-resolution pixels, x then y) and ``obs['array_row']``,
    ``obs['array_col']``, ``obs['in_tissue']``; ``uns['spatial'][library_id]`` holds the scale factors
    (and the images).
    """
    sq = import_squidpy()

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder; pass the Space Ranger output folder ('outs') that holds {counts_file} "
            "and spatial/."
        )
    counts = folder / counts_file
    if not counts.is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise FileNotFoundError(f"no {counts_file} in {folder} (found: {present}).")
    spatial_dir = folder / _SPATIAL_DIR
    positions = next((spatial_dir / f for f in _POSITION_FILES if (spatial_dir / f).is_file()), None)
    if positions is None:
        raise FileNotFoundError(
            f"no spatial/tissue_positions.csv or spatial/tissue_positions_list.csv in {folder}; the spot "
            "coordinates come from there (unpack the Space Ranger 'spatial' archive into the folder)."
        )
    scalefactors = spatial_dir / "scalefactors_json.json"
    lib = _library_id(counts, library_id, folder)
    has_images = scalefactors.is_file() and all((spatial_dir / img).is_file() for img in _IMAGES)
    if load_images and not has_images:
        warnings.warn(
            f"tissue images or scalefactors_json.json missing in {spatial_dir}; reading without images.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Variable names are not unique": fixed below
        adata = sq.read.visium(
            folder, counts_file=counts_file, library_id=lib, load_images=load_images and has_images
        )
    if Key.obsm.spatial not in adata.obsm:  # squidpy sets coordinates only together with the images
        table = _read_positions(positions)
        missing = adata.obs_names.difference(table.index)
        if len(missing):
            raise ValueError(
                f"{len(missing)} barcodes of {counts_file} have no row in {positions.name} (first: "
                f"{missing[0]!r}); the matrix and the spatial folder come from different runs."
            )
        table = table.loc[adata.obs_names]
        for col in ("in_tissue", "array_row", "array_col"):
            adata.obs[col] = table[col].to_numpy()
        adata.obsm[Key.obsm.spatial] = table[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(
            dtype=np.float64
        )
        if scalefactors.is_file():
            adata.uns[Key.uns.spatial][lib]["scalefactors"] = json.loads(scalefactors.read_text())
    adata.obsm[Key.obsm.spatial] = np.asarray(adata.obsm[Key.obsm.spatial], dtype=np.float64)
    if not np.isfinite(adata.obsm[Key.obsm.spatial]).all():
        raise ValueError(f"some barcodes of {counts_file} have no coordinates in {positions.name}.")
    if not adata.var_names.is_unique:
        n_dup = int(adata.var_names.duplicated().sum())
        adata.var_names_make_unique()
        logg.info(f"    made {n_dup} duplicated gene symbols unique (suffixes -1, -2, ...)")
    return adata
