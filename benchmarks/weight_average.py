"""Does averaging the weights over the epochs (``ema_decay``) give better or steadier domains?

Usage::

    python benchmarks/weight_average.py --datasets dlpfc_151673 starmap_mvc osmfish_sscortex --seeds 0 1 2 3 4

One training per dataset and seed, with the defaults of ``semst.tl.domains`` (no ``X_llm``, so no
semantics) and ``ema_decay`` (default 0.99). During that training the embedding of the weights being
trained is taken every 10 epochs from epoch 150; after it, the module holds the weight average. Every
embedding is clustered the way ``tl.domains`` clusters (``cluster_embedding`` with the default metric, then
the majority smoothing) and scored against the annotation, which is read only to score. So ``epoch 300``
is what ``tl.domains`` gives with ``ema_decay=0`` and ``average`` what it gives with ``ema_decay``, paired on
the same run. Each run is a fresh process; records are appended to ``--out`` (JSON lines).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, append_jsonl, run_json

RUN = """
import time, numpy as np, torch
import sys; sys.path.insert(0, {here!r})
from _common import load
import semst_sc as semst_pkg
from semst_sc._constants import Default
from semst_sc._train import embed, train
torch.set_num_threads({threads})
adata, truth_key, k = load({dataset!r})
t = time.perf_counter()
semst = semst_pkg.tl.SemST(adata, seed={seed})
inputs = semst._inputs()
snaps = {{}}
def keep(epoch, losses):
    if (epoch + 1) >= 150 and (epoch + 1) % 10 == 0:
        snaps[f"epoch {{epoch + 1}}"] = embed(semst.module, inputs, device="cpu")
hist = train(semst.module, inputs, n_epochs=Default.n_epochs, seed={seed}, progress=False, callback=keep,
             zinb_fraction=Default.zinb_fraction, spatial_weighting=Default.spatial_weighting,
             ema_decay={decay})
snaps["average"] = embed(semst.module, inputs, device="cpu")
wall = time.perf_counter() - t
ari = {{}}
for name, z in snaps.items():
    labels, _ = semst_pkg.tl.cluster_embedding(z, k, metric=Default.cluster_metric, seed={seed})
    adata.obs["variant"] = semst_pkg.tl.smooth_labels(labels, semst.data.adj_spa).astype(str)
    ari[name] = float(semst_pkg.tl.evaluate(adata, truth_key, pred_key="variant")["ari"])
res = dict(ari=ari, train_wall_s=wall, seconds_per_epoch=float(np.median(hist["seconds"])))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--decay", type=float, default=0.99)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "weight_average.jsonl"))
    args = ap.parse_args()
    here = str(Path(__file__).resolve().parent)
    for ds in args.datasets:
        for seed in args.seeds:
            code = RUN.format(here=here, dataset=ds, seed=seed, decay=args.decay, threads=args.threads)
            rec = {"dataset": ds, "seed": seed, "ema_decay": args.decay, **run_json(code)}
            append_jsonl(args.out, [rec])
            a = rec["ari"]
            print(f"{ds} seed {seed}: epoch 300 {a['epoch 300']:.3f}, average {a['average']:.3f}", flush=True)
    rows = [json.loads(line) for line in Path(args.out).read_text().splitlines() if line.strip()]
    print(table(rows))


def table(rows: list[dict]) -> str:
    """Mean +- population sd over seeds of the last epoch's and the average's ARI, latest record each."""
    import numpy as np

    latest = {(r["dataset"], r["seed"], r["ema_decay"]): r for r in rows}
    out = [
        "| dataset | ema_decay | seeds | epoch 300 (ema_decay=0) | average | paired change | "
        "ARI range over epochs 200-300 | s per epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ds, decay in sorted({(d, e) for d, _, e in latest}):
        rs = [r for (d, _, e), r in sorted(latest.items()) if d == ds and e == decay]
        last = np.array([r["ari"]["epoch 300"] for r in rs])
        avg = np.array([r["ari"]["average"] for r in rs])
        late = [v for r in rs for n, v in r["ari"].items() if n.startswith("epoch ") and int(n[6:]) >= 200]
        out.append(
            f"| {ds} | {decay} | {','.join(str(r['seed']) for r in rs)} | {last.mean():.3f} ± {last.std():.3f} | "
            f"{avg.mean():.3f} ± {avg.std():.3f} | {', '.join(f'{d:+.3f}' for d in avg - last)} | "
            f"{min(late):.3f}-{max(late):.3f} | {np.mean([r['seconds_per_epoch'] for r in rs]):.3f} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
