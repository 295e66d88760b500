"""Time and peak memory of building both graphs on synthetic spots (10k / 50k / 100k by default).

    python benchmarks/graphs.py                 # 10000 50000 100000
    python benchmarks/graphs.py 20000 200000    # other sizes

Every size runs in a fresh interpreter. The synthetic tissue: spots on a jittered hexagonal lattice (pitch
100 units), 7 wavy horizontal domains, 5000 genes with Poisson counts whose rates differ by domain for
a third of the genes (about 8 % of the entries non-zero, like a Visium matrix). Measured, separately:

- ``spatial``: :func:`semst_sc.gr.spatial_graph` with the default radius (4.1 median spot distances);
- ``preprocess``: :func:`semst_sc.pp.preprocess` (3000 Seurat-v3 genes, sparse);
- ``feature``: :func:`semst_sc.gr.feature_graph` on that layer (14-NN cosine; ``method='auto'``, i.e.
  exact up to 10 000 spots, SVD + inverted-file index above);

plus the process's peak resident memory (the counts matrix included) and its resident memory just before
the graphs were built; wall seconds per step and the CPU seconds of all three (all threads, which shows
how much of the wall time was waiting when the machine is shared). Target: 100 000 spots under 4 GB and well under a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

DEFAULT_SIZES = (10_000, 50_000, 100_000)
N_GENES = 5000
N_DOMAINS = 7


def _rss_mb(field: str) -> float:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process, in MB, from /proc (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n: int, seed: int = 0):
    """A synthetic slice with ``n`` spots (AnnData with counts in X and obsm['spatial'])."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    from scipy import sparse

    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(n * 2 / np.sqrt(3))))
    rows = int(np.ceil(n / cols))
    r, c = np.divmod(np.arange(rows * cols)[:n], cols)
    x = 100.0 * (c + 0.5 * (r % 2)) + rng.normal(0, 2, n)
    y = 100.0 * np.sqrt(3) / 2 * r + rng.normal(0, 2, n)
    height = y.max() + 1
    wave = 0.05 * height * np.sin(2 * np.pi * x / (x.max() + 1) * 3)
    domain = np.clip(((y + wave) / height * N_DOMAINS).astype(int), 0, N_DOMAINS - 1)

    base = rng.lognormal(mean=-3.3, sigma=1.2, size=N_GENES)
    effect = np.ones((N_DOMAINS, N_GENES))
    markers = rng.choice(N_GENES, N_GENES // 3, replace=False)
    effect[:, markers] = rng.lognormal(0, 1.0, size=(N_DOMAINS, markers.size))
    depth = rng.lognormal(0, 0.3, size=n)
    blocks = []
    for a in range(0, n, 2000):
        b = min(n, a + 2000)
        lam = (depth[a:b, None] * effect[domain[a:b]] * base[None, :]).astype(np.float32)
        blocks.append(sparse.csr_matrix(rng.poisson(lam).astype(np.float32)))
    X = sparse.vstack(blocks, format="csr")
    empty = np.asarray(X.sum(axis=1)).ravel() == 0
    if empty.any():  # give the (rare) empty spot one count, so validation passes
        X = X.tolil()
        for i in np.flatnonzero(empty):
            X[i, 0] = 1
        X = X.tocsr()
    obs = pd.DataFrame({"domain": pd.Categorical(domain.astype(str))}, index=[f"s{i}" for i in range(n)])
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(N_GENES)]))
    adata.obsm["spatial"] = np.column_stack([x, y])
    return adata


def child(n: int) -> dict:
    import scanpy as sc

    import semst_sc as semst

    sc.settings.verbosity = 0
    adata = synthetic(n)
    res = {"n_spots": n, "nnz_per_spot": adata.X.nnz / n, "rss_before_mb": _rss_mb("VmRSS")}
    cpu = time.process_time()
    t = time.perf_counter()
    semst.gr.spatial_graph(adata)
    res["spatial_s"] = time.perf_counter() - t
    res["spatial_degree"] = adata.uns["spatial_neighbors"]["params"]["mean_degree"]
    t = time.perf_counter()
    semst.pp.preprocess(adata)
    res["preprocess_s"] = time.perf_counter() - t
    t = time.perf_counter()
    semst.gr.feature_graph(adata)
    res["feature_s"] = time.perf_counter() - t
    params = adata.uns["semst_feature_neighbors"]["params"]
    res["feature_method"] = params["method"]
    res["feature_degree"] = params["mean_degree"]
    # share of feature neighbours in the same synthetic domain (a sanity check of the graph)
    g = adata.obsp["semst_feature_connectivities"].tocoo()
    dom = adata.obs["domain"].cat.codes.to_numpy()
    res["feature_same_domain"] = float((dom[g.row] == dom[g.col]).mean())
    res["total_s"] = res["spatial_s"] + res["preprocess_s"] + res["feature_s"]
    res["cpu_s"] = time.process_time() - cpu  # CPU seconds of the three steps (all threads)
    res["peak_rss_mb"] = _rss_mb("VmHWM")
    return res


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        print(json.dumps(child(int(argv[1]))))
        return
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return
    try:
        sizes = [int(a) for a in argv] or list(DEFAULT_SIZES)
    except ValueError:
        sys.exit(f"graphs.py takes numbers of spots (e.g. 20000 200000), got {' '.join(argv)!r}")
    cols = [
        ("n_spots", "spots", "{:d}"),
        ("spatial_s", "spatial s", "{:.1f}"),
        ("spatial_degree", "degree", "{:.1f}"),
        ("preprocess_s", "preprocess s", "{:.1f}"),
        ("feature_s", "feature s", "{:.1f}"),
        ("feature_method", "method", "{}"),
        ("feature_same_domain", "same domain", "{:.2f}"),
        ("total_s", "total s", "{:.1f}"),
        ("cpu_s", "CPU s", "{:.1f}"),
        ("rss_before_mb", "RSS before MB", "{:.0f}"),
        ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ]
    print("| " + " | ".join(h for _, h, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            print(
                f"| {n} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
            )
            continue
        res = json.loads(out.stdout.strip().splitlines()[-1])
        print("| " + " | ".join(fmt.format(res[k]) for k, _, fmt in cols) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
