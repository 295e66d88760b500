"""Regenerate the bundled demo slice from the shared DLPFC file.

    python -m semst_sc.datasets._make_demo [SOURCE.h5ad] [DEST.h5ad]

SOURCE defaults to ``../shared/data/dlpfc_151673.h5ad`` beside the repository, DEST to the package's
``datasets/data/dlpfc_151673_demo.h5ad``. The result is deterministic: the spots of a fixed window of the
Visium array (``array_row`` 4-52, ``array_col`` 14-62: 1188 spots holding every annotated layer, Layer1 to
Layer6 and white matter, across the cortex), and the :data:`N_GENES` genes detected in the most of those
spots (ties broken by the original gene order), kept in the original gene order. Raw counts, coordinates
and the annotation are kept unchanged; the file is written with gzip compression.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROWS = (4, 52)
COLS = (14, 62)
N_GENES = 5000
ANNOTATION = "layer_guess_reordered"
OBS_COLUMNS = ("array_row", "array_col", ANNOTATION)

_REPO = Path(__file__).resolve().parents[3]
DEFAULT_SOURCE = _REPO.parent / "shared" / "data" / "dlpfc_151673.h5ad"
DEFAULT_DEST = Path(__file__).resolve().parent / "data" / "dlpfc_151673_demo.h5ad"


def make_demo(source: Path = DEFAULT_SOURCE, dest: Path = DEFAULT_DEST) -> Path:
    """Write the demo file from ``source`` to ``dest`` and return ``dest``."""
    import anndata as ad
    from scipy import sparse

    full = ad.read_h5ad(source)
    rows, cols = full.obs["array_row"].to_numpy(), full.obs["array_col"].to_numpy()
    spots = (rows >= ROWS[0]) & (rows <= ROWS[1]) & (cols >= COLS[0]) & (cols <= COLS[1])
    sub = full[spots]
    X = sparse.csr_matrix(sub.X)
    detected = np.asarray((X > 0).sum(axis=0)).ravel()
    top = np.sort(np.argsort(-detected, kind="stable")[:N_GENES])
    demo = ad.AnnData(
        X=sparse.csr_matrix(X[:, top], dtype=np.float32),
        obs=sub.obs.loc[:, list(OBS_COLUMNS)].copy(),
        var=sub.var.iloc[top].copy(),
        obsm={"spatial": np.asarray(sub.obsm["spatial"], dtype=np.float64)},
    )
    demo.obs[ANNOTATION] = demo.obs[ANNOTATION].cat.remove_unused_categories()
    dest.parent.mkdir(parents=True, exist_ok=True)
    demo.write_h5ad(dest, compression="gzip", compression_opts=9)
    return dest


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:3]]
    out = make_demo(*args)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
