"""The network as initialised, stage by stage, and a first layer started on the input's principal axes.

Usage::

    python benchmarks/first_layer.py stages --datasets dlpfc_151673 --seeds 0 1
    python benchmarks/first_layer.py train --init pca --datasets dlpfc_151673 --seeds 0 1 2 3 4 --out F

``stages``: builds the network of ``tl.domains`` (``fusion='none'``, the training seed fixing the initial
weights) and clusters what each stage of its forward pass makes of the input, with no training: the input
``x``, its spatial average ``A x``, the first layer's product ``x W1``, its propagation ``A x W1 + b``, the
ReLU, the outputs of the spatial and the expression branches, their concatenation and the embedding ``z``.
Every stage is clustered the way ``tl.domains`` clusters its embedding (``tl.cluster_embedding``: rows
scaled to unit length for ``cosine``, 20 PCs, tied Gaussian mixture; then the label vote), with clustering
seeds 0-4, and the mean and spread of the ARI are printed. Labels are used for scoring only.

``train``: the default training of ``tl.domains`` (300 epochs, ``fusion='none'``, cosine clustering and the
label vote), with the first layer of both branches initialised either as usual (``--init glorot``) or on
the input's principal axes (``--init pca``): the top ``hidden`` right singular vectors of the centred input,
turned by a random rotation of their span (one per branch, from the training seed) so that every unit
reads a mix of components, and scaled so that ``||x W1||`` equals that of the Glorot weights it replaces.
Panels with no more genes than hidden units keep the Glorot weights. The rest of the call is the
normal one; ``--init glorot`` reproduces ``tl.domains``' labels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import DATASETS, append_jsonl, load, pop_truth  # noqa: E402


def _score(feats, k, adj, truth, scored, seeds=range(5)) -> dict:
    from sklearn.metrics import adjusted_rand_score

    import semst_sc as semst

    feats = np.asarray(feats, np.float64)
    out = {}
    for metric in ("cosine", "euclidean"):
        aris = []
        for s in seeds:
            labels, _ = semst.tl.cluster_embedding(feats, k, metric=metric, seed=s)
            voted = semst.tl.smooth_labels(labels, adj)
            aris.append(adjusted_rand_score(truth, voted[scored]))
        out[metric] = (float(np.mean(aris)), float(np.std(aris)))
    return out


def stages(name: str, seed: int, with_input: bool) -> list[dict]:
    import torch

    from semst_sc._train import _prepare
    from semst_sc.tl._semst import SemST

    adata, key, k = load(name)
    truth, scored = pop_truth(adata, key)
    model = SemST(adata, fusion="none", seed=seed)
    mod = model.module.eval()
    d = _prepare(model._inputs(), mod, torch.device("cpu"), with_target=False)
    x = d.x if d.x.layout == torch.strided else d.x.to_dense()
    a_spa, a_fea = d.adj_spa, d.adj_fea
    st: dict = {}
    with torch.no_grad():
        if with_input:  # the same for every seed
            st["x"] = x
            st["A_spa x"] = a_spa @ x
        g = mod.gcn_spa
        s = g.layer1.transform(x)
        st["x W1"] = s
        pre = g.layer1.propagate(s, a_spa)
        st["A_spa x W1 + b"] = pre
        st["ReLU"] = torch.relu(pre)
        z, h_spa, h_fea = mod.encode(d.x, a_spa, a_fea, None)
        st["h_spa"], st["h_fea"] = h_spa, h_fea
        st["[h_spa, h_fea]"] = torch.cat([h_spa, h_fea], 1)
        st["z"] = z
    rows = []
    for stage, f in st.items():
        sc = _score(f.numpy(), k, model.data.adj_spa, truth, scored)
        rows.append(
            {
                "dataset": name,
                "seed": seed,
                "stage": stage,
                "width": int(f.shape[1]),
                **{f"ari_{m}": v[0] for m, v in sc.items()},
                **{f"ari_{m}_sd": v[1] for m, v in sc.items()},
            }
        )
    return rows


def pca_first_layer(model, seed: int) -> str:
    """Put the input's principal axes (randomly rotated, energy-matched) into both first layers."""
    import torch

    x = model.data.x
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    branches = (model.module.gcn_spa, model.module.gcn_fea)
    hidden = branches[0].layer1.weight.shape[1]
    if x.shape[1] <= hidden:
        return "glorot (no more genes than hidden units)"
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    axes = vt[:hidden].T  # genes x hidden, orthonormal columns
    rng = np.random.default_rng(seed)
    for g in branches:
        q, r = np.linalg.qr(rng.standard_normal((hidden, hidden)))
        w = axes @ (q * np.sign(np.diag(r)))
        glorot = g.layer1.weight.detach().numpy().astype(np.float64)
        w *= np.linalg.norm(x @ glorot) / np.linalg.norm(x @ w)
        with torch.no_grad():
            g.layer1.weight.copy_(torch.from_numpy(w).float())
    return "pca"


def train(name: str, seed: int, init: str) -> dict:
    from sklearn.metrics import adjusted_rand_score

    import semst_sc as semst
    from semst_sc.tl._semst import SemST

    adata, key, k = load(name)
    truth, scored = pop_truth(adata, key)
    t = time.perf_counter()
    model = SemST(adata, fusion="none", seed=seed)
    used = pca_first_layer(model, seed) if init == "pca" else "glorot"
    model.train(progress=False)
    emb = model.get_embedding()
    labels, _ = semst.tl.cluster_embedding(emb, k, seed=seed)
    labels = semst.tl.smooth_labels(labels, model.data.adj_spa)
    return {
        "dataset": name,
        "seed": seed,
        "init": init,
        "init_used": used,
        "ari": adjusted_rand_score(truth, labels[scored]),
        "wall_s": time.perf_counter() - t,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["stages", "train"])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--init", choices=["glorot", "pca"], default="pca")
    ap.add_argument("--out", default=None, help="append the records (JSON lines) to this file")
    args = ap.parse_args()
    for name in args.datasets:
        for i, seed in enumerate(args.seeds):
            if args.what == "stages":
                rows = stages(name, seed, with_input=i == 0)
                for r in rows:
                    print(
                        f"| {name} | {seed} | {r['stage']} | {r['width']} | "
                        f"{r['ari_cosine']:.3f} +- {r['ari_cosine_sd']:.3f} | "
                        f"{r['ari_euclidean']:.3f} +- {r['ari_euclidean_sd']:.3f} |",
                        flush=True,
                    )
            else:
                rows = [train(name, seed, args.init)]
                print(json.dumps(rows[0]), flush=True)
            append_jsonl(args.out, rows)


if __name__ == "__main__":
    main()
