"""Accuracy, time and memory of ``semst.tl.domains`` on the real datasets, and a scaling table.

Usage::

    python benchmarks/domains.py                 # all datasets, seeds 0 1, fusion fsm(random X_llm) / none
    python benchmarks/domains.py --scaling       # synthetic 10k / 50k / 100k spots: s per epoch, peak RSS
    python benchmarks/domains.py --datasets dlpfc_151673 --seeds 0 --fusions none

Every run is a fresh process (peak memory is that process's maximum RSS). Labels are used for scoring
only, after the run. "fsm (random)" feeds Gaussian vectors of width 384 as ``X_llm``: it measures the
machinery and the effect of uninformative semantics, not a language model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, SHARED, append_jsonl, run_json, summarise, table

RUN = """
import time, numpy as np, anndata as ad, torch
import semst_sc as semst
torch.set_num_threads({threads})
adata = ad.read_h5ad({path!r})
if {fusion!r} == 'fsm':
    adata.obsm['X_llm'] = np.random.default_rng({seed}).normal(size=(adata.n_obs, 384)).astype(np.float32)
t = time.perf_counter()
semst.tl.domains(adata, n_domains={k}, seed={seed}, fusion={fusion!r}, progress=False, {extra})
wall = time.perf_counter() - t
res = semst.tl.evaluate(adata, {truth!r})
res = {{k: float(v) for k, v in res.items() if isinstance(v, (int, float))}}
res.update(wall_s=wall, epochs=len(adata.uns['semst']['history']['loss']),
           train_s=float(adata.uns['semst'].get('train_s', float('nan'))))
"""

SCALE = """
import sys, time, numpy as np, torch
sys.path.insert(0, {bench!r})
import semst_sc as semst
from _common import synthetic_tissue
torch.set_num_threads({threads})
n = {n}
adata = synthetic_tissue(n)  # 3000 genes, 5 bands; drawn in row blocks (no dense n x genes matrix)
t = time.perf_counter()
semst.tl.domains(adata, n_domains=5, n_epochs={epochs}, fusion='none', progress=False,
                 spatial_mode='knn', n_spatial_neighbors=8, {extra})
wall = time.perf_counter() - t
u = adata.uns['semst']
res = dict(n_spots=n, wall_s=wall, epochs={epochs}, train_s=float(u.get('train_s', float('nan'))),
           zinb_fraction=u['params']['zinb_fraction'])
res['s_per_epoch'] = res['train_s'] / {epochs}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="*", default=list(DATASETS))
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    p.add_argument("--fusions", nargs="*", default=["fsm", "none"])
    p.add_argument("--extra", default="", help="extra keyword arguments for tl.domains, e.g. 'n_epochs=200'")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scaling", action="store_true")
    p.add_argument("--sizes", nargs="*", type=int, default=[10_000, 50_000, 100_000])
    p.add_argument("--epochs", type=int, default=5, help="epochs per scaling run")
    p.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    a = p.parse_args()

    rows = []
    if a.scaling:
        for n in a.sizes:
            r = run_json(
                SCALE.format(
                    n=n,
                    epochs=a.epochs,
                    threads=a.threads,
                    extra=a.extra,
                    bench=str(Path(__file__).resolve().parent),
                )
            )
            r.setdefault("n_spots", n)
            rows.append(r)
            print(json.dumps(r), flush=True)
        print(table(rows, ["n_spots", "zinb_fraction", "wall_s", "s_per_epoch", "peak_rss_mb", "error"]))
    else:
        for name in a.datasets:
            file, truth, k = DATASETS[name]
            for fusion in a.fusions:
                for seed in a.seeds:
                    code = RUN.format(
                        path=str(SHARED / file),
                        truth=truth,
                        k=k,
                        seed=seed,
                        fusion=fusion,
                        extra=a.extra,
                        threads=a.threads,
                    )
                    r = run_json(code)
                    r.update(dataset=name, fusion="fsm (random)" if fusion == "fsm" else fusion, seed=seed)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
        metrics = ("ari", "nmi", "acc", "f1_macro", "wall_s", "peak_rss_mb")
        summary = summarise(rows, ["dataset", "fusion"], metrics)
        print(
            table(
                summary,
                ["dataset", "fusion", "seeds", "ari", "nmi", "acc", "f1_macro", "wall_s", "peak_rss_mb"],
            )
        )
    append_jsonl(a.out, rows)


if __name__ == "__main__":
    main()
