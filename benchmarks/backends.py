"""Time per epoch of the two graph engines: torch.sparse (default) vs DGL (``backend="dgl"``).

Runs in the DGL environment (torch 2.2.1 + dgl 2.1.0; ``.ci/dgl`` builds it from requirements/dgl.lock),
so both engines are measured in the same process on the same torch. Usage::

    python benchmarks/backends.py                       # DLPFC slice (3000 HVGs) + 50k synthetic spots
    python benchmarks/backends.py --datasets dlpfc --reps 10 --threads 2

Rows:

- ``gcn``: one two-layer GCN (3000 -> 256 -> 128, the defaults), forward + backward + Adam step, on the
  spatial graph and on the expression kNN graph;
- ``graph step``: the two propagations alone (``adj @ support`` forward + backward, widths 256 and 128),
  the only part the backends do differently (the feature transform ``x @ W`` is shared);
- ``semst``: one training epoch of the whole SemST module (both GCN branches, fusion, decoder, losses),
  through ``semst_sc.tl._semst.SemST`` (``fusion='none'``: no language model).

Times are medians over ``--reps`` epochs after two warm-up epochs (the whole module: the mean of
``--semst-reps`` epochs after one), in milliseconds: wall clock, and CPU time of this process (all
threads), the fairer number when other work shares the machine.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, table

HIDDEN, LATENT, N_GENES = 256, 128, 3000


def _median_ms(step, reps: int) -> tuple[float, float]:
    """Median (wall, CPU) milliseconds of ``step`` after two warm-up calls.

    CPU time (all threads of this process) is the fairer number on a busy machine: other processes
    stretch the wall clock but not the work done here.
    """
    for _ in range(2):
        step()
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def _knn(data: np.ndarray, k: int, metric: str = "euclidean") -> sp.csr_matrix:
    from sklearn.neighbors import kneighbors_graph

    a = kneighbors_graph(data, k, mode="connectivity", metric=metric, include_self=False)
    return sp.csr_matrix(a.maximum(a.T))


def _scaled(adata) -> np.ndarray:
    import scanpy as sc

    ad = adata.copy()
    sc.pp.highly_variable_genes(ad, flavor="seurat_v3", n_top_genes=N_GENES, subset=True)
    sc.pp.normalize_total(ad, target_sum=1e4)
    sc.pp.log1p(ad)
    sc.pp.scale(ad, max_value=10)
    return np.asarray(ad.X, dtype=np.float32)


def dlpfc():
    """The DLPFC slice: 3000 HVGs (Seurat v3), scaled; squidpy's Visium grid graph; cosine 14-NN graph."""
    import anndata as ad
    import squidpy as sq
    from sklearn.decomposition import PCA

    path = SHARED / "dlpfc_151673.h5ad"
    if not path.exists():
        raise SystemExit(f"{path} not found: set SEMST_SHARED_DATA to the folder with the datasets")
    adata = ad.read_h5ad(path)
    sq.gr.spatial_neighbors(adata, coord_type="grid", n_neighs=6)
    x = _scaled(adata)
    fea = _knn(PCA(50, random_state=0).fit_transform(x), 14, metric="cosine")
    return adata, x, sp.csr_matrix(adata.obsp["spatial_connectivities"]), fea


def synthetic(n: int = 50_000):
    """``n`` spots on a grid in 5 bands, 3000 genes of Poisson counts; 8-NN spatial, 14-NN feature graph."""
    import anndata as ad
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(n)))
    xy = np.stack(np.divmod(np.arange(n), side), 1).astype(np.float32) * 100.0
    band = (xy[:, 0] // (side * 100 / 5)).astype(int)
    rates = rng.gamma(0.3, 1.0, size=(5, N_GENES)).astype(np.float32)
    counts = sp.csr_matrix(rng.poisson(rates[band] * 0.6).astype(np.float32))
    adata = ad.AnnData(counts, obsm={"spatial": xy})
    adata.var_names = [f"g{i}" for i in range(N_GENES)]
    norm = sp.csr_matrix(counts.multiply(1e4 / np.maximum(counts.sum(1), 1)))
    norm.data = np.log1p(norm.data)
    x = norm.toarray().astype(np.float32)  # N x genes (not N x N)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    np.clip(x, None, 10, out=x)
    spa = _knn(xy, 8)
    fea = _knn(PCA(30, random_state=0).fit_transform(x), 14)
    return adata, x, spa, fea


def bench_gcn(x: np.ndarray, graph: sp.csr_matrix, reps: int) -> dict[str, float]:
    from semst_sc.nn._dgl import use_dgl
    from semst_sc.nn._gcn import GCN
    from semst_sc.nn._graph import normalize_adjacency

    xt = torch.from_numpy(x)
    adj = normalize_adjacency(graph)
    torch.manual_seed(0)
    ref = GCN(x.shape[1], HIDDEN, LATENT, dropout=0.0)
    models = {"torch": ref, "dgl": use_dgl(copy.deepcopy(ref))}
    out = {}
    for name, m in models.items():
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)

        def step(m=m, opt=opt):
            opt.zero_grad()
            m(xt, adj).pow(2).mean().backward()
            opt.step()

        out[f"gcn {name}"] = _median_ms(step, reps)
        supports = [torch.randn(x.shape[0], w, requires_grad=True) for w in (HIDDEN, LATENT)]

        def graph_step(m=m, supports=supports):
            total = m.layer1.propagate(supports[0], adj).sum() + m.layer2.propagate(supports[1], adj).sum()
            total.backward()

        out[f"graph step {name}"] = _median_ms(graph_step, reps)
    return out


def bench_semst(adata, spa: sp.csr_matrix, fea: sp.csr_matrix, reps: int) -> dict[str, float] | None:
    """One epoch of the whole SemST module per backend (None when the module is not in this checkout)."""
    try:
        from semst_sc.tl._semst import SemST
    except ImportError as err:
        print(f"skipping the whole-module row: {err}", file=sys.stderr)
        return None
    from semst_sc._constants import Key
    from semst_sc.nn._dgl import use_dgl

    wired = "backend" in inspect.signature(SemST).parameters
    adata = adata.copy()
    # the graphs of the gcn rows: SemST reuses graphs it finds in .obsp
    adata.obsp[Key.obsp.spatial_conn] = spa
    adata.obsp[Key.obsp.feature_conn] = fea
    out = {}
    for name in ("torch", "dgl"):
        kw = {"backend": name} if wired else {}
        model = SemST(adata, fusion="none", seed=0, device="cpu", **kw)
        if name == "dgl" and not wired:
            use_dgl(model.module)
        model.train(n_epochs=1, progress=False)  # warm-up
        t, c = time.perf_counter(), time.process_time()
        model.train(n_epochs=reps, progress=False)
        out[f"semst {name}"] = (
            1e3 * (time.perf_counter() - t) / reps,
            1e3 * (time.process_time() - c) / reps,
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--datasets", nargs="*", default=["dlpfc", "synthetic50k"], choices=["dlpfc", "synthetic50k"]
    )
    p.add_argument("--reps", type=int, default=5, help="timed epochs per measurement")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--semst-reps", type=int, default=3, help="timed epochs of the whole module")
    p.add_argument("--no-semst", action="store_true", help="skip the whole-module row")
    a = p.parse_args()

    from semst_sc.nn._dgl import require_dgl

    dgl = require_dgl()  # a clear ImportError outside the DGL environment
    torch.set_num_threads(a.threads)
    dgl.utils.set_num_threads(a.threads)  # DGL's kernels run their own OpenMP pool
    print(f"torch {torch.__version__}, dgl {dgl.__version__}, {a.threads} threads, median of {a.reps} epochs")
    rows = []

    def add(data, spots, graph, part, r, key):
        (tw, tc), (dw, dc) = r[f"{key} torch"], r[f"{key} dgl"]
        rows.append(
            {
                "data": data,
                "spots": spots,
                "graph": graph,
                "part": part,
                "torch wall ms": tw,
                "dgl wall ms": dw,
                "torch cpu ms": tc,
                "dgl cpu ms": dc,
                "dgl/torch (cpu)": dc / tc,
            }
        )
        print(rows[-1], flush=True)

    for name in a.datasets:
        t = time.perf_counter()
        adata, x, spa, fea = dlpfc() if name == "dlpfc" else synthetic()
        n = x.shape[0]
        print(
            f"{name}: {n} spots x {x.shape[1]} genes, data ready in {time.perf_counter() - t:.0f} s",
            flush=True,
        )
        for gname, graph in (("spatial", spa), ("feature", fea)):
            r = bench_gcn(x, graph, a.reps)
            label = f"{gname} ({graph.nnz / n:.1f} nb/spot)"
            add(name, n, label, "gcn fwd+bwd", r, "gcn")
            add(name, n, label, "graph step", r, "graph step")
        if not a.no_semst:
            r = bench_semst(adata, spa, fea, a.semst_reps)
            if r is not None:
                add(name, n, "both", "semst epoch", r, "semst")
        del adata, x, spa, fea
    cols = ["data", "spots", "graph", "part", "torch wall ms", "dgl wall ms", "torch cpu ms", "dgl cpu ms"]
    print(table(rows, [*cols, "dgl/torch (cpu)"]))


if __name__ == "__main__":
    main()
