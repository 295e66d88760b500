"""One function per method: ``fn(adata, n_domains, seed, platform) -> (labels, settings)``.

``adata`` holds raw counts in ``X``, coordinates in ``obsm['spatial']`` and, for Visium, the array
coordinates ``obs['array_row']``/``obs['array_col']``; it carries no annotation. ``platform`` is ``'visium'``
(hexagonal spot array), ``'imaging'`` (single-cell, irregular positions) or ``'grid'`` (the synthetic square
lattice). Each peer runs with the settings its own tutorial documents (see README.md in this folder); the
true number of domains is the only thing passed from outside.

The peer packages are imported inside the functions, so this file also imports in the project's venv.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (the peers draw from the global generator)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x)


# --------------------------------------------------------------------------------------------- GraphST
def graphst(adata, n_domains: int, seed: int, platform: str) -> tuple[np.ndarray, dict[str, Any]]:
    """GraphST 1.1.1: its DLPFC tutorial for Visium (datatype '10X', mclust on PCA-20 of the embedding,
    refinement with radius 50); its Stereo-seq tutorial (datatype 'Stereo', sparse graph, no refinement)
    for single-cell imaging data and for the large synthetic lattices."""
    import torch
    from GraphST import GraphST
    from GraphST.utils import clustering

    datatype = "10X" if platform == "visium" else "Stereo"
    refinement = platform == "visium"
    model = GraphST.GraphST(adata.copy(), device=torch.device("cpu"), random_seed=seed, datatype=datatype)
    out = model.train()
    clustering(out, n_domains, radius=50, method="mclust", refinement=refinement)
    settings = {
        "datatype": datatype,
        "epochs": 600,
        "lr": 0.001,
        "dim_output": 64,
        "n_hvg": 3000,
        "graph": "3-NN spatial",
        "clustering": "mclust EEE on PCA(20) of emb",
        "refinement": refinement,
        "radius": 50,
        "random_seed": seed,
        "mclust_seed": 2020,
    }
    return np.asarray(out.obs["domain"].astype(str)), settings


# --------------------------------------------------------------------------------------------- SpaGCN
def spagcn(adata, n_domains: int, seed: int, platform: str) -> tuple[np.ndarray, dict[str, Any]]:
    """SpaGCN 1.2.7: its tutorial / ez_mode without histology: p = 0.5, l by ``search_l``, resolution
    by ``search_res`` to the target K (start 0.7, step 0.1), louvain initialisation, 200 epochs, lr 0.05;
    hexagonal refinement on Visium only."""
    import scanpy as sc
    import SpaGCN as spg

    ad = adata.copy()
    x_pixel = ad.obsm["spatial"][:, 1].astype(float).tolist()
    y_pixel = ad.obsm["spatial"][:, 0].astype(float).tolist()
    adj = spg.calculate_adj_matrix(x=x_pixel, y=y_pixel, histology=False)
    ad.var_names_make_unique()
    spg.prefilter_genes(ad, min_cells=3)
    spg.prefilter_specialgenes(ad)
    sc.pp.normalize_per_cell(ad)
    sc.pp.log1p(ad)
    # SpaGCN calls ``X.A`` on sparse input, which recent scipy removed: hand it the same values dense.
    ad.X = _dense(ad.X).astype(np.float32)
    p = 0.5
    l_value = spg.search_l(p, adj, start=0.01, end=1000, tol=0.01, max_run=100)
    res = spg.search_res(
        ad,
        adj,
        l_value,
        n_domains,
        start=0.7,
        step=0.1,
        tol=5e-3,
        lr=0.05,
        max_epochs=20,
        r_seed=seed,
        t_seed=seed,
        n_seed=seed,
    )
    clf = spg.SpaGCN()
    clf.set_l(l_value)
    _seed_everything(seed)
    clf.train(ad, adj, init_spa=True, init="louvain", res=res, tol=5e-3, lr=0.05, max_epochs=200)
    y_pred, _prob = clf.predict()
    labels = np.asarray(y_pred).astype(str)
    refined = False
    if platform == "visium":
        adj_2d = spg.calculate_adj_matrix(
            x=ad.obs["array_row"].astype(float).tolist(),
            y=ad.obs["array_col"].astype(float).tolist(),
            histology=False,
        )
        labels = np.asarray(
            spg.refine(sample_id=ad.obs_names.tolist(), pred=labels.tolist(), dis=adj_2d, shape="hexagon")
        ).astype(str)
        refined = True
    settings = {
        "p": p,
        "l": float(l_value),
        "res": float(res),
        "histology": False,
        "init": "louvain",
        "lr": 0.05,
        "max_epochs": 200,
        "num_pcs": 50,
        "refine": "hexagon" if refined else False,
        "seeds": seed,
    }
    return labels, settings


# --------------------------------------------------------------------------------------------- BANKSY
def _banksy(adata, n_domains: int, seed: int, platform: str, lam: float) -> tuple[np.ndarray, dict[str, Any]]:
    """pybanksy 1.3.5 as in its README and notebooks: normalize_total, 2000 HVGs (Seurat on a log copy)
    when the panel is larger, scaled Gaussian decay, PCA 20, Leiden on a 50-NN shared-neighbour graph with
    the package's own resolution search to K (``max_labels``). Neighbourhood: k_geom 6 without AGF
    (max_m 0) on Visium, as its DLPFC example; k_geom 15 with AGF (max_m 1) otherwise, as its README and
    STARmap notebook."""
    import scanpy as sc
    from banksy.cluster_methods import run_Leiden_partition
    from banksy.embed_banksy import generate_banksy_matrix
    from banksy.initialize_banksy import initialize_banksy
    from banksy_utils.umap_pca import pca_umap

    ad = adata.copy()
    ad.var_names_make_unique()
    sc.pp.normalize_total(ad)
    n_hvg = None
    if ad.n_vars > 2000:
        lg = ad.copy()
        sc.pp.log1p(lg)
        sc.pp.highly_variable_genes(lg, flavor="seurat", n_top_genes=2000)
        ad = ad[:, lg.var["highly_variable"].to_numpy()].copy()
        n_hvg = 2000
    ad.obs["x"] = ad.obsm["spatial"][:, 0]
    ad.obs["y"] = ad.obsm["spatial"][:, 1]
    coord_keys = ("x", "y", "spatial")
    k_geom, max_m, pca_dim = (6, 0, 20) if platform == "visium" else (15, 1, 20)
    banksy_dict = initialize_banksy(
        ad,
        coord_keys,
        k_geom,
        nbr_weight_decay="scaled_gaussian",
        max_m=max_m,
        plt_edge_hist=False,
        plt_nbr_weights=False,
        plt_agf_angles=False,
        plt_theta=False,
    )
    banksy_dict, _ = generate_banksy_matrix(ad, banksy_dict, [lam], max_m, verbose=False)
    _seed_everything(seed)
    pca_umap(banksy_dict, pca_dims=[pca_dim], plt_remaining_var=False, add_umap=False)
    results_df, _ = run_Leiden_partition(
        banksy_dict,
        [],
        num_nn=50,
        num_iterations=-1,
        partition_seed=seed,
        match_labels=False,
        max_labels=n_domains,
    )
    row = results_df.iloc[0]
    lab = row["labels"]
    lab = lab.dense if hasattr(lab, "dense") else lab
    settings = {
        "lambda": lam,
        "k_geom": k_geom,
        "max_m": max_m,
        "nbr_weight_decay": "scaled_gaussian",
        "normalize": "normalize_total (no log)",
        "n_hvg": n_hvg,
        "pca_dims": pca_dim,
        "clustering": "Leiden (banksy), resolution searched to K",
        "resolution": float(row["resolution"]),
        "num_nn": 50,
        "partition_seed": seed,
    }
    return np.asarray(lab).astype(str), settings


def banksy_l02(adata, n_domains, seed, platform):
    return _banksy(adata, n_domains, seed, platform, 0.2)


def banksy_l08(adata, n_domains, seed, platform):
    return _banksy(adata, n_domains, seed, platform, 0.8)


# --------------------------------------------------------------------------------------------- CellCharter
def cellcharter(adata, n_domains: int, seed: int, platform: str) -> tuple[np.ndarray, dict[str, Any]]:
    """CellCharter 0.3.7 as documented: Delaunay graph (squidpy) with long links removed (99th percentile),
    neighbourhood aggregation over 3 layers, Gaussian mixture with K components. Dimension reduction: PCA
    (normalize_total 1e4, log1p, 2000 HVGs when the panel is larger, 50 components) instead of the scVI the
    docs recommend for transcriptomics (not installed: see README)."""
    import cellcharter as cc
    import scanpy as sc
    import squidpy as sq

    ad = adata.copy()
    ad.var_names_make_unique()
    sc.pp.normalize_total(ad, target_sum=1e4)
    sc.pp.log1p(ad)
    n_hvg = None
    if ad.n_vars > 2000:
        sc.pp.highly_variable_genes(ad, flavor="seurat", n_top_genes=2000, subset=True)
        n_hvg = 2000
    n_comps = min(50, ad.n_vars - 1, ad.n_obs - 1)
    sc.pp.pca(ad, n_comps=n_comps, random_state=seed)
    sq.gr.spatial_neighbors(ad, coord_type="generic", delaunay=True, spatial_key="spatial")
    cc.gr.remove_long_links(ad)
    cc.gr.aggregate_neighbors(ad, n_layers=3, use_rep="X_pca", out_key="X_cellcharter")
    gmm = cc.tl.Cluster(n_clusters=n_domains, random_state=seed, trainer_params={"accelerator": "cpu"})
    gmm.fit(ad, use_rep="X_cellcharter")
    labels = np.asarray(gmm.predict(ad, use_rep="X_cellcharter")).astype(str)
    settings = {
        "dim_reduction": f"PCA {n_comps}",
        "n_hvg": n_hvg,
        "graph": "Delaunay, remove_long_links 99th pct",
        "n_layers": 3,
        "aggregations": "mean",
        "gmm": "full covariance, kmeans init",
        "random_state": seed,
    }
    return labels, settings


# --------------------------------------------------------------------------------------------- semst-sc
def semst(adata, n_domains: int, seed: int, platform: str, **kwargs) -> tuple[np.ndarray, dict[str, Any]]:
    """semst-sc with its defaults: ``semst.tl.domains(adata, n_domains=K, seed=seed)``; extra keyword
    arguments (``--semst-kwargs``) are passed through and recorded."""
    import semst_sc as semst_pkg

    ad = adata.copy()
    semst_pkg.tl.domains(ad, n_domains=n_domains, seed=seed, progress=False, **kwargs)
    info = ad.uns.get("semst", {})
    params = {
        k: (v if isinstance(v, int | float | str | bool) else str(v))
        for k, v in info.get("params", {}).items()
    }
    extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    settings = {
        "call": f"semst.tl.domains(adata, n_domains={n_domains}, seed={seed}{extra})",
        "kwargs": kwargs,
    }
    settings["params"] = params
    settings["version"] = str(getattr(semst_pkg, "__version__", "unknown"))
    return np.asarray(ad.obs["semst_domain"].astype(str)), settings


def semst_hops2(
    adata, n_domains: int, seed: int, platform: str, **kwargs
) -> tuple[np.ndarray, dict[str, Any]]:
    """semst-sc with the setting its documentation recommends for single-cell-resolution data:
    ``smooth_hops=2`` (the embedding averaged twice over the spatial graph before clustering)."""
    return semst(adata, n_domains, seed, platform, **{"smooth_hops": 2, **kwargs})


METHODS = {
    "graphst": graphst,
    "spagcn": spagcn,
    "banksy_l0.2": banksy_l02,
    "banksy_l0.8": banksy_l08,
    "cellcharter": cellcharter,
    "semst": semst,
    "semst_hops2": semst_hops2,
}


def versions(method: str) -> dict[str, str]:
    """Installed versions of the packages a method uses."""
    from importlib.metadata import PackageNotFoundError, version

    pkgs = {
        "graphst": ["GraphST", "torch", "scanpy", "POT", "rpy2"],
        "spagcn": ["SpaGCN", "torch", "scanpy", "louvain"],
        "banksy_l0.2": ["pybanksy", "scanpy", "leidenalg"],
        "banksy_l0.8": ["pybanksy", "scanpy", "leidenalg"],
        "cellcharter": ["cellcharter", "torchgmm", "squidpy", "scanpy", "torch"],
        "semst": ["semst-sc", "torch", "scanpy", "squidpy"],
    }["semst" if method.startswith("semst") else method]
    out = {}
    for p in [*pkgs, "numpy", "scipy", "scikit-learn", "anndata"]:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "absent"
    out["threads"] = os.environ.get("OMP_NUM_THREADS", "")
    return out
