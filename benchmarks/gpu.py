"""``semst.tl.domains`` on a GPU against the same machine's CPU: time, memory, ARI, repeatability.

Run from the repository root on a machine with CUDA::

    python benchmarks/gpu.py                                  # the three datasets, seeds 0 1, scaling
    python benchmarks/gpu.py --datasets dlpfc_151673 --sizes  # one dataset, no scaling table
    SEMST_SHARED_DATA=/path/to/data python benchmarks/gpu.py --out benchmarks/results/gpu.jsonl

Everything runs in this one process (the imports and the CUDA context are paid once, before the first
timed call; a short warm-up call on the GPU comes first). For every dataset:

- ``tl.domains(device='cuda')`` with semantics off for each seed, and seed 0 again to see whether a GPU
  run repeats itself (CUDA's sparse products add in a varying order, so it may not, to the last bit);
- the same with ``fusion='fsm'`` and a random 384-wide ``X_llm`` (the cost of the FSM path);
- the same with ``precision='bfloat16'`` (mixed precision for the two large products of each epoch);
- the same with ``ema_decay=0.99`` (the weights averaged over the epochs: what the update costs on a GPU);
- ``device='cpu'`` with ``--cpu-threads`` threads (default: all cores) as the baseline of the same machine.

The scaling table trains synthetic tissues (the generator of ``domains.py --scaling``) of ``--sizes``
spots on the GPU for ``--epochs`` epochs. Their spatial graph (8 nearest grid neighbours) is built here
with scikit-learn and stored where ``tl.domains`` reuses it, because building it is not what is measured.
A dataset whose file carries ``obsp['spatial_connectivities']`` reuses it the same way; otherwise
``tl.domains`` builds it through squidpy, as for any user. For a GPU machine without squidpy,
``python benchmarks/gpu.py --prepare DIR`` (run where squidpy is installed; no GPU needed) writes copies of
the datasets with the graph ``tl.domains`` would build (``semst.gr.spatial_graph`` with its defaults)
already stored; point ``SEMST_SHARED_DATA`` at DIR there.

Columns: ``wall_s`` the whole ``tl.domains`` call (preprocessing, graphs, training, clustering,
smoothing); ``train_s`` the training loop alone; ``s_per_epoch`` = train_s / epochs; ``gpu_peak_mb``
``torch.cuda.max_memory_allocated`` during the call (tensors only, not the CUDA context).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, load, synthetic_tissue


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _call(adata, device: str, **kw) -> dict:
    import torch

    import semst_sc as semst

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync()
    t = time.perf_counter()
    semst.tl.domains(adata, device=device, progress=False, **kw)
    _sync()
    wall = time.perf_counter() - t
    u = adata.uns["semst"]
    epochs = len(u["history"]["loss"])
    train_s = float(u.get("train_s", float("nan")))
    res = {
        "device": str(u["params"].get("device", device)),
        "wall_s": wall,
        "train_s": train_s,
        "epochs": epochs,
        "s_per_epoch": train_s / max(epochs, 1),
    }
    if device.startswith("cuda"):
        res["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def _emit(rec: dict, out: Path | None) -> None:
    print("RESULT", json.dumps(rec), flush=True)
    if out is not None:
        with open(out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")


def _datasets(names, seeds, cpu_threads, out) -> list[dict]:
    import torch

    import semst_sc as semst

    rows = []
    for name in names:
        adata, truth, k = load(name)
        runs = [("cuda", "none", s, "float32", 0.0) for s in seeds]
        runs += [("cuda", "none", seeds[0], "float32", 0.0), ("cuda", "fsm", seeds[0], "float32", 0.0)]
        runs += [("cuda", "none", seeds[0], "bfloat16", 0.0), ("cuda", "none", seeds[0], "float32", 0.99)]
        runs += [("cpu", "none", seeds[0], "float32", 0.0)]
        labels_first = None
        for i, (dev, fusion, seed, precision, ema) in enumerate(runs):
            a = adata.copy()
            if fusion == "fsm":
                a.obsm["X_llm"] = np.random.default_rng(seed).normal(size=(a.n_obs, 384)).astype(np.float32)
            if dev == "cpu":
                torch.set_num_threads(cpu_threads)
            try:
                rec = _call(a, dev, n_domains=k, seed=seed, fusion=fusion, precision=precision, ema_decay=ema)
            except Exception as e:
                rec = {"device": dev, "error": f"{type(e).__name__}: {e}"}
            else:
                ev = semst.tl.evaluate(a, truth)
                rec.update({m: float(ev[m]) for m in ("ari", "nmi", "acc", "f1_macro")})
                lab = a.obs["semst_domain"].to_numpy()
                if i == 0:
                    labels_first = lab
                if i == len(seeds):  # the repeat of the first seed
                    rec["repeat_of_first"] = True
                    rec["same_labels_as_first"] = bool(np.array_equal(lab, labels_first))
            rec.update(
                dataset=name,
                fusion=fusion,
                precision=precision,
                ema_decay=ema,
                seed=seed,
                n_spots=int(adata.n_obs),
            )
            if dev == "cpu":
                rec["cpu_threads"] = cpu_threads
            _emit(rec, out)
            rows.append(rec)
    return rows


def _synthetic(n: int):
    """The tissue of ``domains.py --scaling`` with a kNN-8 grid graph attached where tl.domains reuses it."""
    from sklearn.neighbors import kneighbors_graph

    adata = synthetic_tissue(n)
    conn = kneighbors_graph(adata.obsm["spatial"], 8, include_self=False)
    adata.obsp["spatial_connectivities"] = ((conn + conn.T) > 0).astype(np.float32).tocsr()
    return adata


def _scaling(sizes, epochs, out) -> list[dict]:
    rows = []
    for n in sizes:
        t = time.perf_counter()
        adata = _synthetic(n)
        gen_s = time.perf_counter() - t
        try:
            rec = _call(adata, "cuda", n_domains=5, n_epochs=epochs, fusion="none", seed=0)
        except Exception as e:
            rec = {"error": f"{type(e).__name__}: {e}"}
        rec.update(n_spots=n, generate_s=gen_s, table="scaling")
        _emit(rec, out)
        rows.append(rec)
        del adata
    return rows


def _setting(r: dict) -> str:
    ema = f", ema_decay {r['ema_decay']:g}" if r.get("ema_decay") else ""
    return f"{r['fusion']}, {r.get('precision', 'float32')}{ema}"


def _prepare(names, folder: Path) -> None:
    """Copies of the datasets with the spatial graph ``tl.domains`` would build (squidpy) already stored."""
    import semst_sc as semst

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        adata, _, _ = load(name)
        semst.gr.spatial_graph(adata)
        path = folder / DATASETS[name][0]
        adata.write_h5ad(path, compression="gzip")
        print(f"{path}: {adata.n_obs} spots, spatial graph stored", flush=True)


def _table(rows: list[dict]) -> str:
    cpu = {
        r["dataset"]: r["wall_s"]
        for r in rows
        if r.get("device") == "cpu" and "wall_s" in r and "dataset" in r
    }
    head = "| dataset | device | fusion, precision | seed | ARI | wall s | train s | s / epoch | GPU peak MB | CPU wall / this |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if "dataset" not in r:
            continue
        if "error" in r:
            lines.append(
                f"| {r['dataset']} | {r['device']} | {_setting(r)} | {r['seed']} | {r['error']} |||||"
            )
            continue
        ratio = cpu.get(r["dataset"], float("nan")) / r["wall_s"]
        seed = (
            f"{r['seed']} (repeat: {'same' if r['same_labels_as_first'] else 'different'} labels)"
            if r.get("repeat_of_first")
            else str(r["seed"])
        )
        lines.append(
            f"| {r['dataset']} | {r['device']} | {_setting(r)} | {seed} | {r['ari']:.3f} | {r['wall_s']:.1f} | "
            f"{r['train_s']:.1f} | {r['s_per_epoch']:.3f} | {r.get('gpu_peak_mb', float('nan')):.0f} | {ratio:.1f} |"
        )
    scale = [r for r in rows if r.get("table") == "scaling"]
    if scale:
        lines += ["", "| spots | wall s | train s | s / epoch | GPU peak MB |", "|---|---|---|---|---|"]
        for r in scale:
            if "error" in r:
                lines.append(f"| {r['n_spots']} | {r['error']} ||||")
            else:
                lines.append(
                    f"| {r['n_spots']} | {r['wall_s']:.1f} | {r['train_s']:.1f} | {r['s_per_epoch']:.3f} | "
                    f"{r['gpu_peak_mb']:.0f} |"
                )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="*", default=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--cpu-threads", type=int, default=os.cpu_count())
    p.add_argument("--sizes", nargs="*", type=int, default=[10_000, 100_000])
    p.add_argument("--epochs", type=int, default=20, help="epochs per scaling run")
    p.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    p.add_argument(
        "--prepare",
        type=Path,
        default=None,
        metavar="DIR",
        help="only write copies of the datasets with their spatial graph stored to DIR (needs squidpy, no GPU)",
    )
    args = p.parse_args()
    if args.prepare is not None:
        _prepare(args.datasets, args.prepare)
        return

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark compares a GPU with the CPU of the same machine")
    import semst_sc as semst

    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; semst-sc {semst.__version__}")
    print(f"cpu threads for the baseline: {args.cpu_threads}", flush=True)
    _call(_synthetic(2000), "cuda", n_domains=5, n_epochs=3, fusion="none")  # warm-up: CUDA context, kernels
    rows = _datasets(args.datasets, args.seeds, args.cpu_threads, args.out)
    rows += _scaling(args.sizes, args.epochs, args.out)
    text = (
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, semst-sc {semst.__version__}; "
        f"CPU baseline on the same machine with {args.cpu_threads} threads.\n\n" + _table(rows)
    )
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
