"""Inputs and reference images of the plot tests (tests/test_pl.py).

The inputs are real data with a fake-but-valid semst result written into it, made by fixed rules without
any training (the plots are the component under test): the bundled demo slice (``semst.datasets.demo()``,
a window of DLPFC 151673), its expert layers as the annotation, and

- ``obs['semst_domain']``: the layers relabelled by a fixed permutation, with a regular sprinkle of spots
  moved to the next layer's domain and an eighth domain carved out of the white matter (its smaller part) (so the Hungarian
  matching has something to do and one domain stays unmatched);
- ``obsm['X_semst']``: a one-hot code of that domain plus fixed Gaussian noise;
- ``uns['semst']``: a smooth deterministic loss history and a domain-selection curve peaking at 7;
- for the embedding image only, ``obsm['X_semst_umap']``: a fixed layout (domain centres on a circle plus
  fixed noise) cached as ``pl.embedding``'s UMAP, since a computed UMAP differs between processors.

Regenerate the images (after a deliberate change of a plot, and after looking at every one of them):

    python tests/make_baseline_images.py            # all
    python tests/make_baseline_images.py compare    # some
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
BASELINE_DIR = HERE / "baseline_images"
TRUTH = "layer_guess_reordered"
DOMAIN = "semst_domain"
DPI = 50

#: layer i (Layer1..Layer6, WM) becomes domain PERM[i] + 1
PERM = np.array([3, 6, 0, 5, 1, 4, 2])


def make_input():
    """The demo slice (coordinates and annotation only) with a deterministic fake semst result."""
    import anndata as ad

    import semst_sc as semst

    full = semst.datasets.demo()
    adata = ad.AnnData(obs=full.obs[["array_row", "array_col", TRUTH]].copy())
    adata.obsm["spatial"] = np.asarray(full.obsm["spatial"], dtype=np.float64)
    del full

    truth = adata.obs[TRUTH]
    code = truth.cat.codes.to_numpy()
    row = adata.obs["array_row"].to_numpy()
    col = adata.obs["array_col"].to_numpy()
    pred = PERM[code]
    moved = (3 * row + col) % 11 == 0
    pred[moved] = PERM[(code[moved] + 1) % 7]
    wm = truth.to_numpy() == "WM"
    pred[wm & (col < np.quantile(col[wm], 0.3))] = 7  # an eighth domain, matched to nothing
    cats = [str(i) for i in range(1, 9)]
    adata.obs[DOMAIN] = pd.Categorical([cats[p] for p in pred], categories=cats)

    rng = np.random.default_rng(0)
    adata.obsm["X_semst"] = (np.eye(8)[pred] * 3.0 + rng.normal(size=(adata.n_obs, 8))).astype(np.float32)

    epoch = np.arange(1, 101, dtype=float)
    zinb = 2.0 * np.exp(-epoch / 30) + 0.9
    cr = 0.5 * np.exp(-epoch / 10) + 0.05
    spatial = 0.5 * np.exp(-epoch / 50) + 0.05
    ks = np.arange(2, 16)
    score = 0.36 - 0.012 * (ks - 7) ** 2 + 0.004 * np.cos(ks)
    adata.uns["semst"] = {
        "params": {"n_domains": 8, "seed": 0, "device": "cpu"},
        "history": {"loss": zinb + 0.1 * cr + 0.1 * spatial, "zinb": zinb, "cr": cr, "spatial": spatial},
        "domain_selection": {"n_domains": ks, "score": score, "criterion": "silhouette", "chosen": 7},
    }
    return adata


@contextmanager
def plot_style():
    """Fixed matplotlib settings for the reference images (the defaults, DejaVu Sans, no hinting drift)."""
    from matplotlib.testing import set_font_settings_for_testing

    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        set_font_settings_for_testing()
        matplotlib.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI})
        try:
            yield
        finally:
            plt.close("all")


def _spatial(adata):
    import semst_sc as semst

    return semst.pl.spatial(adata, color=[DOMAIN, TRUTH], return_ax=True)[0].figure


def _compare(adata):
    import semst_sc as semst

    return semst.pl.compare(adata, TRUTH, DOMAIN, return_ax=True)[0].figure


def _loss(adata):
    import semst_sc as semst

    return semst.pl.loss(adata, return_ax=True).figure


def _domain_selection(adata):
    import semst_sc as semst

    return semst.pl.domain_selection(adata, return_ax=True).figure


def _embedding(adata):
    import semst_sc as semst
    from semst_sc._constants import Key
    from semst_sc.pl._embedding import _umap_params

    # A fixed layout stands in for the UMAP, stored the way pl.embedding caches its own, so the drawing is
    # what this image tests: UMAP's coordinates differ between processors (float sums in numba and
    # pynndescent). pl.embedding must reuse this layout; computing a UMAP instead would change the image.
    code = adata.obs[DOMAIN].cat.codes.to_numpy()
    angle = 2 * np.pi * code / 8
    noise = np.random.default_rng(1).normal(scale=0.7, size=(adata.n_obs, 2))
    basis = Key.obsm.semst
    adata.obsm[f"{basis}_umap"] = (np.c_[np.cos(angle), np.sin(angle)] * 5 + noise).astype(np.float32)
    # pl.embedding's defaults: n_neighbors=15, seed=0
    params = _umap_params(np.asarray(adata.obsm[basis]), basis, n_neighbors=15, seed=0)
    adata.uns[f"{basis}_umap"] = {"params": params}
    return semst.pl.embedding(adata, truth_key=TRUTH, return_ax=True)[0].figure


#: name of the reference image -> function drawing it from make_input()
CASES: dict[str, Callable] = {
    "spatial": _spatial,
    "compare": _compare,
    "loss": _loss,
    "domain_selection": _domain_selection,
    "embedding": _embedding,
}


def render(name: str, adata, path: Path) -> None:
    """Draw case ``name`` on a copy of ``adata`` and write it to ``path`` as PNG."""
    with plot_style():
        fig = CASES[name](adata.copy())
        fig.savefig(path, dpi=DPI)


def main(names: list[str]) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    names = names or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        sys.exit(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    BASELINE_DIR.mkdir(exist_ok=True)
    adata = make_input()
    for name in names:
        path = BASELINE_DIR / f"{name}.png"
        render(name, adata, path)
        print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main(sys.argv[1:])
