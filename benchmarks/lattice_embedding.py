"""Why semst-sc scores lower than its peers on the peers' synthetic lattice: a look at the embedding.

Usage::

    python benchmarks/lattice_embedding.py                        # 10 000 spots, seed 0
    python benchmarks/lattice_embedding.py --spots 10000 --seeds 0 1 --out results/lattice_embedding.jsonl

The tissue is the scaling table's (``peers/synth.py``: six wavy layers and a round inclusion, 2000
genes, seven domains), cached under ``PEERS_CACHE``. Each seed trains ``semst.tl.domains`` with its
defaults (no semantics) in this process, then, with the truth read only now, for scoring:

- the ARI of the labels it wrote, and the confusion of domains and clusters (printed);
- for the pair of domains whose mean embeddings point most nearly the same way, the cosine of the two
  means and how well a logistic regression tells the two apart on held-out spots (3-fold): a high
  accuracy with a cosine near 1 means the embedding keeps the difference, but in a direction so small
  that clustering does not see it;
- the ARI of the other clusterings ``tl.cluster_embedding`` offers on the same embedding, each followed
  by the label vote of ``tl.domains`` (``smooth_labels`` over the spatial graph).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))
import synth  # noqa: E402
from _common import append_jsonl  # noqa: E402


def _pair_report(z: np.ndarray, truth: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    names = sorted(set(truth))
    means = {c: z[truth == c].mean(axis=0) for c in names}
    unit = {c: m / np.linalg.norm(m) for c, m in means.items()}
    cos, a, b = max((float(unit[x] @ unit[y]), x, y) for x, y in combinations(names, 2))
    pair = np.isin(truth, [a, b])
    probe = LogisticRegression(max_iter=5000)
    acc = cross_val_score(probe, z[pair], truth[pair], cv=3).mean()
    norms = {c: float(np.linalg.norm(z[truth == c], axis=1).mean()) for c in names}
    return {"closest_pair": [a, b], "pair_cosine": cos, "pair_probe_acc": float(acc), "mean_norm": norms}


def run(n_spots: int, seed: int) -> dict:
    import anndata as ad
    import pandas as pd
    import torch
    from sklearn.metrics import adjusted_rand_score

    import semst_sc as semst
    from semst_sc.tl import smooth_labels

    torch.set_num_threads(2)
    adata = ad.read_h5ad(synth.tissue_path(n_spots))
    truth = adata.obs.pop(synth.TRUTH_KEY).astype(str).to_numpy()  # out of the AnnData during training
    t = time.perf_counter()
    semst.tl.domains(adata, synth.N_DOMAINS, fusion="none", seed=seed, progress=False)
    wall = time.perf_counter() - t
    z = adata.obsm["X_semst"]
    labels = adata.obs["semst_domain"].astype(str).to_numpy()
    print(pd.crosstab(pd.Series(truth, name="domain"), pd.Series(labels, name="semst_domain")), flush=True)
    rec = {"spots": n_spots, "seed": seed, "wall_s": wall, "ari_default": adjusted_rand_score(truth, labels)}
    rec.update(_pair_report(z, truth))
    adj = adata.obsp["spatial_connectivities"]
    for method in ("gmm", "leiden"):
        for metric in ("cosine", "euclidean"):
            lab, _ = semst.tl.cluster_embedding(z, synth.N_DOMAINS, method=method, metric=metric, seed=0)
            rec[f"ari_{method}_{metric}"] = adjusted_rand_score(truth, smooth_labels(lab, adj))
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spots", type=int, default=10000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default=None, help="append one JSON line per seed to this file")
    args = ap.parse_args()
    for seed in args.seeds:
        rec = run(args.spots, seed)
        print(json.dumps(rec), flush=True)
        append_jsonl(args.out, [rec])


if __name__ == "__main__":
    main()
