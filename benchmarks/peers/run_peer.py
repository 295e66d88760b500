"""Run ONE method on ONE dataset with ONE seed, in this process, and print one JSON line.

    python run_peer.py --method banksy_l0.8 --dataset starmap_mvc --seed 0 [--out results/peers.jsonl]

Datasets: the three annotated files in ``../../../shared/data`` (``dlpfc_151673``, ``starmap_mvc``,
``osmfish_sscortex``) or ``synth_<N>`` (a synthetic tissue of N spots, see ``synth.py``). The method sees
raw counts, coordinates and (Visium) array coordinates only; the annotation is read separately and used
for scoring after the method has returned. ``wall_s`` times the method alone (its preprocessing, training
and clustering; not the imports or the reading of the file); ``peak_rss_mb`` is this process's peak
resident memory (``getrusage``), which includes the imports and the data, the same for every method.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as _platform
import resource
import sys
import time
import traceback
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "2")
os.environ.setdefault("MPLBACKEND", "Agg")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import peer_methods  # noqa: E402
from peer_metrics import score  # noqa: E402

DATA_DIR = Path(os.environ.get("SEMST_DATA", str(HERE.parents[2] / "shared" / "data")))
DATASETS = {
    # name: (truth column, platform)
    "dlpfc_151673": ("layer_guess_reordered", "visium"),
    "starmap_mvc": ("smoothed_manual", "imaging"),
    "osmfish_sscortex": ("Region", "imaging"),
}
KEEP_OBS = ("array_row", "array_col")  # spatial metadata a Visium method may use; never annotations


def load(dataset: str):
    """Return (method input AnnData without annotations, truth labels, platform)."""
    import anndata as ad
    import pandas as pd

    if dataset.startswith("synth_"):
        import synth

        n = int(dataset.split("_", 1)[1])
        full = ad.read_h5ad(synth.tissue_path(n))
        truth_key, plat = synth.TRUTH_KEY, "grid"
    elif dataset in DATASETS:
        truth_key, plat = DATASETS[dataset]
        path = DATA_DIR / f"{dataset}.h5ad"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; set SEMST_DATA to the folder with the h5ad files")
        full = ad.read_h5ad(path)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; use one of {sorted(DATASETS)} or synth_<N>")
    truth = full.obs[truth_key].astype(object).where(full.obs[truth_key].notna(), None).to_numpy()
    obs = pd.DataFrame(index=full.obs_names.copy())
    for col in KEEP_OBS:
        if col in full.obs:
            obs[col] = full.obs[col].to_numpy()
    x = full.X.tocsr().astype(np.float32) if hasattr(full.X, "tocsr") else np.asarray(full.X, np.float32)
    clean = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=full.var_names.copy()))
    clean.obsm["spatial"] = np.asarray(full.obsm["spatial"], dtype=np.float64)
    return clean, truth, plat


def _processor() -> dict:
    """The processor's model name and widest vector extension (Linux): CPU timings and bits depend on them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    simd = next((f for f in ("avx512f", "avx2", "avx", "sse4_2") if f in flags), "")
    return {"processor": name, "simd": simd, "bf16": "avx512_bf16" in flags or "amx_bf16" in flags}


def _maxrss_mb(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


def run(method: str, dataset: str, seed: int, semst_kwargs: dict | None = None) -> dict:
    rec: dict = {"method": method, "dataset": dataset, "seed": seed}
    t_proc = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        pass
    try:
        adata, truth, plat = load(dataset)
        n_domains = len({t for t in truth if t is not None})
        rec.update(n_spots=int(adata.n_obs), n_genes=int(adata.n_vars), n_domains=n_domains, platform=plat)
        fn = peer_methods.METHODS[method]
        kwargs = (semst_kwargs or {}) if method.startswith("semst") else {}
        t0 = time.perf_counter()
        labels, settings = fn(adata, n_domains, seed, plat, **kwargs)
        rec["wall_s"] = round(time.perf_counter() - t0, 2)
        labels = np.asarray(labels)
        if labels.shape[0] != adata.n_obs:
            raise RuntimeError(f"{method} returned {labels.shape[0]} labels for {adata.n_obs} spots")
        rec.update(score(truth, labels))
        rec["settings"] = settings
        rec["status"] = "ok"
    except Exception as exc:  # a peer that fails is a result, recorded as such
        rec["status"] = "failed"
        rec["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        rec["traceback"] = traceback.format_exc()[-4000:]
    rec["process_s"] = round(time.perf_counter() - t_proc, 2)
    rec["peak_rss_mb"] = round(_maxrss_mb(resource.RUSAGE_SELF), 1)
    rec["peak_rss_children_mb"] = round(_maxrss_mb(resource.RUSAGE_CHILDREN), 1)
    rec["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    rec["versions"] = peer_methods.versions(method)
    rec["python"] = sys.executable
    rec["host"] = {"cpus": os.cpu_count(), "machine": _platform.machine(), **_processor()}
    rec["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True, choices=sorted(peer_methods.METHODS))
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="append the JSON line to this file too")
    ap.add_argument("--semst-kwargs", default="{}", help="JSON dict passed to semst.tl.domains")
    ap.add_argument("--run-id", default="", help="tag stored in the record (set by run_all.py)")
    args = ap.parse_args(argv)
    rec = run(args.method, args.dataset, args.seed, json.loads(args.semst_kwargs))
    if args.run_id:
        rec["run_id"] = args.run_id
    line = json.dumps(rec, default=str)
    print("RESULT " + line, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(line + "\n")
    return 0 if rec["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
