"""Seconds of each CPU-side step of ``tl.domains`` (everything but training) on a synthetic tissue.

    python benchmarks/prep_stages.py                    # 100 000 spots
    python benchmarks/prep_stages.py 1000000 --out F    # also append the JSON record to F

On a GPU only the training runs on the device; these steps stay on the CPU and, at 1 000 000 spots, were
most of the call (``results/gpu.md``). The tissue is the one of ``gpu.py`` (``_common.synthetic_tissue``,
3000 genes, 5 bands), with its 8-nearest-neighbour spatial graph; the steps are timed one by one, as
``tl.domains`` runs them:

- ``preprocess``: counts validated, 2000 Seurat-v3 genes, normalised and scaled;
- ``knn_normalize``, ``knn_svd``, ``knn_ivf``, ``knn_graph``: the feature graph (``method='svd'``):
  rows L2-normalised, the 50-component projection, the inverted-file search, the symmetric graph;
- ``cluster``: ``cluster_embedding`` (cosine rows, 20-component PCA, tied Gaussian mixture) of a
  1 000 000 x 128 stand-in embedding (the band means plus noise);
- ``smooth``: the majority vote over the spatial graph.

Prints one JSON record and one Markdown table row; the peak is the process's resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

STEPS = ("preprocess", "knn_normalize", "knn_svd", "knn_ivf", "knn_graph", "cluster", "smooth")


def run(n: int) -> dict:
    import scipy.sparse as sp
    import torch  # imported before timing, as in tl.domains
    from gpu import _synthetic

    from semst_sc._validation import get_counts
    from semst_sc.gr import _feature
    from semst_sc.pp import preprocess_arrays
    from semst_sc.tl._cluster import cluster_embedding, smooth_labels

    res: dict = {"n_spots": n, "threads": torch.get_num_threads()}
    t = time.perf_counter()
    adata = _synthetic(n)
    res["generate_s"] = time.perf_counter() - t

    def step(name, fn):
        t = time.perf_counter()
        out = fn()
        res[name] = time.perf_counter() - t
        return out

    pre = step("preprocess", lambda: preprocess_arrays(get_counts(adata), adata.var_names, n_top_genes=2000))
    x = sp.csr_matrix(pre.X, dtype=np.float32)
    xn, _ = step("knn_normalize", lambda: _feature._normalize_rows(x))
    y = step("knn_svd", lambda: _feature._reduce(xn, 50, 0))
    ind = step("knn_ivf", lambda: _feature._knn_ivf(y, 14, seed=0))
    step("knn_graph", lambda: _feature._graph_from_indices(ind))
    band = adata.obs["domain"].to_numpy()
    rng = np.random.default_rng(0)
    emb = (rng.normal(size=(5, 128))[band] + 2.0 * rng.normal(size=(n, 128))).astype(np.float32)
    labels, _ = step("cluster", lambda: cluster_embedding(emb, 5, seed=0))
    step("smooth", lambda: smooth_labels(labels, adata.obsp["spatial_connectivities"]))
    res["total_s"] = sum(res[s] for s in STEPS)
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("n", type=int, nargs="?", default=100_000, help="spots")
    p.add_argument("--out", type=Path, help="append the JSON record to this file")
    args = p.parse_args()
    res = run(args.n)
    print(json.dumps(res))
    if args.out:
        with args.out.open("a") as fh:
            fh.write(json.dumps(res) + "\n")
    print("| spots | " + " | ".join(STEPS) + " | total s | peak RSS GB |")
    print("|---" * (len(STEPS) + 3) + "|")
    print(
        f"| {args.n} | "
        + " | ".join(f"{res[s]:.1f}" for s in STEPS)
        + f" | {res['total_s']:.1f} | {res['peak_rss_gb']:.1f} |"
    )


if __name__ == "__main__":
    main()
