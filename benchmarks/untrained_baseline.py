"""What training adds: semst-sc's own input, reduced by PCA and clustered the same way, with no network.

Usage::

    python benchmarks/untrained_baseline.py                       # the three datasets and the 10k lattice
    python benchmarks/untrained_baseline.py --datasets dlpfc_151673 --out results/untrained_baseline.jsonl
    python benchmarks/untrained_baseline.py --seeds 0      # one clustering seed, as the first records did

For each dataset: the network's input and spatial graph, built by the same call ``tl.domains`` makes
(``tl._semst.prepare`` with its defaults: highly variable genes, normalisation, scaling, clipping, then
``log1p``; the radius graph); a PCA of that input to 50 components (fewer on small panels); 0, 1 or 2
passes of ``tl.smooth_embedding`` over the spatial graph; the default clustering of ``tl.domains``
(``tl.cluster_embedding``: Gaussian mixture on 20 PCs) in both geometries, then its label vote
(``tl.smooth_labels``). No training, no labels until scoring. The PCA is seeded (0); the mixture runs
once per clustering seed (``--seeds``, default 0-4, the seeds ``tl.domains`` would use with training
seeds 0-4), because on DLPFC the mixture's start alone moves the ARI by more than 0.1. Compare with
``tl.domains`` on the same data (``README.md``, ``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import groupby
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))
from _common import DATASETS, append_jsonl, load, pop_truth  # noqa: E402

LATTICE = "synth_10000"


def _load(name: str):
    if name == LATTICE:
        import anndata as ad
        import synth

        return ad.read_h5ad(synth.tissue_path(10000)), synth.TRUTH_KEY, synth.N_DOMAINS
    return load(name)


def run(name: str, seeds: list[int]) -> list[dict]:
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    import semst_sc as semst
    from semst_sc.tl._semst import prepare

    adata, truth_key, k = _load(name)
    truth, scored = pop_truth(adata, truth_key)
    t = time.perf_counter()
    data = prepare(adata)
    x, adj = data.x, data.adj_spa
    n_comps = min(50, x.shape[1] - 1)
    pcs = PCA(n_comps, random_state=0).fit_transform(x.toarray())
    rows = []
    for hops in (0, 1, 2):
        feats = semst.tl.smooth_embedding(pcs, adj, hops) if hops else pcs
        for metric in ("euclidean", "cosine"):
            for seed in seeds:
                labels, _ = semst.tl.cluster_embedding(feats, k, metric=metric, seed=seed)
                voted = semst.tl.smooth_labels(labels, adj)
                rows.append(
                    {
                        "dataset": name,
                        "n_pcs_input": n_comps,
                        "hops": hops,
                        "metric": metric,
                        "cluster_seed": seed,
                        "ari": adjusted_rand_score(truth, labels[scored]),
                        "ari_voted": adjusted_rand_score(truth, voted[scored]),
                        "wall_s_dataset": time.perf_counter() - t,
                    }
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=[*DATASETS, LATTICE], choices=[*DATASETS, LATTICE])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="clustering seeds")
    ap.add_argument("--out", default=None, help="append the records (JSON lines) to this file")
    args = ap.parse_args()
    print(
        "| dataset | passes of averaging | metric | seeds | ARI | ARI after the label vote | per seed, voted |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.datasets:
        rows = run(name, args.seeds)
        # run() gives the seeds of one (hops, metric) variant next to each other
        for (hops, metric), group in groupby(rows, key=lambda r: (r["hops"], r["metric"])):
            rs = list(group)
            a = np.array([r["ari"] for r in rs])
            v = np.array([r["ari_voted"] for r in rs])
            print(
                f"| {name} | {hops} | {metric} | {len(rs)} | {a.mean():.3f} +- {a.std():.3f} | "
                f"{v.mean():.3f} +- {v.std():.3f} | {', '.join(f'{x:.3f}' for x in v)} |"
            )
        append_jsonl(args.out, rows)


if __name__ == "__main__":
    main()
