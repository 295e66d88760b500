"""Deterministic synthetic tissues for the scaling table.

A square lattice of ``n_spots`` spots (pitch 100 units, like a 100 um grid) carries seven smooth domains: six
wavy layers plus one round inclusion, a cortex-like layout. Each domain has its own mean profile over
``n_genes`` genes (a shared log-normal baseline; 40 marker genes per domain raised 3x and 40 others lowered
2x). Counts are negative binomial (gamma-Poisson, dispersion 0.3) with a log-normal library size per spot,
stored sparse (CSR, float32), generated in row chunks so that memory stays linear in spots.

The same ``(n_spots, n_genes, seed)`` always gives the same file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

TRUTH_KEY = "domain"
N_DOMAINS = 7


def _domains(xy: np.ndarray, width: float, height: float) -> np.ndarray:
    x = xy[:, 0] / width
    y = xy[:, 1] / height
    u = y + 0.06 * np.sin(2.0 * math.pi * 1.5 * x) + 0.03 * np.sin(2.0 * math.pi * 4.0 * x + 1.0)
    edges = np.quantile(u, np.linspace(0.0, 1.0, N_DOMAINS))[1:-1]  # six layers of similar size
    lab = np.searchsorted(edges, u, side="right")
    blob = (x - 0.7) ** 2 + ((y - 0.45) * height / width) ** 2 < 0.12**2
    lab[blob] = N_DOMAINS - 1
    return lab.astype(np.int64)


def make_tissue(n_spots: int, n_genes: int = 2000, seed: int = 0):
    """Return an AnnData with raw counts in X, ``obsm['spatial']`` and the truth in ``obs['domain']``."""
    import anndata as ad

    if n_spots < 100:
        raise ValueError(f"n_spots must be at least 100, got {n_spots}")
    rng = np.random.default_rng([20240611, n_spots, n_genes, seed])
    side = math.ceil(math.sqrt(n_spots))
    ii, jj = np.divmod(np.arange(n_spots), side)
    xy = np.column_stack([jj * 100.0, ii * 100.0]).astype(np.float64)
    width = max(float(xy[:, 0].max()), 1.0)
    height = max(float(xy[:, 1].max()), 1.0)
    lab = _domains(xy, width, height)

    base = rng.lognormal(mean=-1.6, sigma=1.3, size=n_genes)
    profiles = np.tile(base, (N_DOMAINS, 1))
    for d in range(N_DOMAINS):
        genes = rng.choice(n_genes, size=80, replace=False)
        profiles[d, genes[:40]] *= 3.0
        profiles[d, genes[40:]] /= 2.0
    profiles /= profiles.sum(axis=1, keepdims=True)

    libsize = rng.lognormal(mean=math.log(1500.0), sigma=0.35, size=n_spots)
    dispersion = 0.3
    chunks = []
    for start in range(0, n_spots, 4096):
        stop = min(start + 4096, n_spots)
        mu = profiles[lab[start:stop]] * libsize[start:stop, None]
        lam = mu * rng.gamma(shape=1.0 / dispersion, scale=dispersion, size=mu.shape)
        counts = rng.poisson(lam).astype(np.float32)
        chunks.append(sp.csr_matrix(counts))
    X = sp.vstack(chunks, format="csr")
    obs = pd.DataFrame(
        {TRUTH_KEY: pd.Categorical([f"D{d + 1}" for d in lab])},
        index=pd.Index([f"spot{i}" for i in range(n_spots)], name=None),
    )
    var = pd.DataFrame(index=pd.Index([f"Gene{g:04d}" for g in range(n_genes)]))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["spatial"] = xy
    adata.uns["synthetic"] = {"n_spots": n_spots, "n_genes": n_genes, "seed": seed, "n_domains": N_DOMAINS}
    return adata


def cache_dir() -> Path:
    return Path(os.environ.get("PEERS_CACHE", str(Path.home() / ".cache" / "semst-peers")))


def tissue_path(n_spots: int, n_genes: int = 2000, seed: int = 0) -> Path:
    """Path of the cached file, written on first use (written to a temporary name, then renamed)."""
    path = cache_dir() / f"synth_{n_spots}_{n_genes}_s{seed}.h5ad"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.h5ad")
        make_tissue(n_spots, n_genes, seed).write_h5ad(tmp)
        os.replace(tmp, path)
    return path
