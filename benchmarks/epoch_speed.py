"""Per-epoch cost of the SemST module, per component, on DLPFC 151673 and on synthetic tissue.

Run from the repository root::

    python benchmarks/epoch_speed.py                  # DLPFC 151673 + synthetic 10k spots, 2 threads
    python benchmarks/epoch_speed.py --threads 1 --synthetic 0

For every component the forward AND backward pass is timed (median of ``--repeats`` runs after a warm-up),
as wall time and as CPU time of this process. On a shared machine the wall time suffers from other
processes (2-thread runs badly so: the threads wait for each other); the load average is printed so
that a reader can judge. The "naive" rows are the straightforward formulations (three separate heads and
the autograd ZINB formula over the full N x M matrices; the reference's dense N x N spatial loss) for
comparison: they are NOT used by semst-sc.

Preprocessing is inline (METHOD.md 1.1): Seurat-v3 HVGs on counts (3000), per-spot total to 1e4 on the
HVG subset, ``scale(zero_center=False, max_value=10)``; radius graph r = 560 px; cosine 14-NN feature
graph, union-symmetrised. The language-model input is a random 384-wide matrix (MiniLM width): only its
cost matters here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch.nn import functional as F

from semst_sc import _train as tr
from semst_sc import nn as snn

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dlpfc_151673.h5ad"


# -- inputs ---------------------------------------------------------------------------------------------
def dlpfc_inputs(path: Path, n_top: int = 3000) -> tuple[tr.TrainInputs, str]:
    import scanpy as sc
    from sklearn.neighbors import NearestNeighbors, kneighbors_graph

    adata = sc.read_h5ad(path)
    sc.pp.filter_genes(adata, min_cells=100)
    sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top)
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.scale(adata, zero_center=False, max_value=10)
    x = sp.csr_matrix(adata.X, dtype=np.float32)
    a_spa = (
        NearestNeighbors(radius=560).fit(adata.obsm["spatial"]).radius_neighbors_graph(mode="connectivity")
    )
    a_spa = ((a_spa + a_spa.T) > 0).astype(np.float32)
    a_fea = kneighbors_graph(x, 14, metric="cosine")
    a_fea = ((a_fea + a_fea.T) > 0).astype(np.float32)
    h = np.random.default_rng(0).normal(size=(x.shape[0], 384)).astype(np.float32)
    desc = (
        f"DLPFC 151673: {x.shape[0]} spots x {x.shape[1]} HVGs, x {100 * x.nnz / np.prod(x.shape):.1f} % non-zero, "
        f"{a_spa.nnz / x.shape[0]:.1f} spatial / {a_fea.nnz / x.shape[0]:.1f} feature neighbours per spot"
    )
    return tr.TrainInputs(x, a_spa, a_fea, x, a_spa, h_llm=h), desc


def synthetic_inputs(
    n: int, m: int = 3000, density: float = 0.19, seed: int = 0
) -> tuple[tr.TrainInputs, str]:
    from sklearn.neighbors import kneighbors_graph

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    coords = np.c_[np.arange(n) // side, np.arange(n) % side].astype(float)
    x = sp.random(n, m, density=density, format="csr", dtype=np.float32, random_state=seed)
    x.data = np.minimum(rng.gamma(1.0, 1.5, x.nnz), 10).astype(np.float32)
    a_spa = kneighbors_graph(coords, 56)  # as many neighbours as the DLPFC radius graph
    a_spa = ((a_spa + a_spa.T) > 0).astype(np.float32)
    a_fea = kneighbors_graph(rng.normal(size=(n, 16)), 14)
    a_fea = ((a_fea + a_fea.T) > 0).astype(np.float32)
    h = rng.normal(size=(n, 384)).astype(np.float32)
    desc = f"synthetic: {n} spots x {m} genes, {100 * density:.0f} % non-zero, 56-NN spatial, 14-NN feature"
    return tr.TrainInputs(x, a_spa, a_fea, x, a_spa, h_llm=h), desc


# -- timing ---------------------------------------------------------------------------------------------
def timeit(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(wall), statistics.median(cpu)


def components(inputs: tr.TrainInputs, repeats: int, naive: bool) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    mod = snn.SemSTModule(inputs.x.shape[1], 384)
    dev = torch.device("cpu")
    d = tr._prepare(inputs, mod, dev, with_target=True)
    n = d.x.shape[0]
    x_dense = d.x if d.x.layout == torch.strided else d.x.to_dense()
    x_sparse = snn.scipy_to_torch_csr(inputs.x)
    rows = []

    w = torch.cat([mod.gcn_spa.layer1.weight, mod.gcn_fea.layer1.weight], 1).detach().requires_grad_()

    def first_layer(x):
        def f():
            snn.feature_matmul(x, w).sum().backward()

        return f

    rows.append(("GCN layer 1, X @ [W_spa|W_fea], dense X", *timeit(first_layer(x_dense), repeats)))
    rows.append(("GCN layer 1, X @ [W_spa|W_fea], sparse CSR X", *timeit(first_layer(x_sparse), repeats)))

    support = snn.feature_matmul(x_dense, w).detach().requires_grad_()

    def rest_of_gcn():
        hs = mod.gcn_spa.forward_from_support(support[:, : mod.hidden].contiguous(), d.adj_spa)
        hf = mod.gcn_fea.forward_from_support(support[:, mod.hidden :].contiguous(), d.adj_fea)
        (hs.sum() + hf.sum()).backward()

    rows.append(("GCN propagation (A @ .) + layer 2, both branches", *timeit(rest_of_gcn, repeats)))

    zg = torch.randn(n, 2 * mod.latent, requires_grad=True)
    rows.append(("fusion: FSM + MLP", *timeit(lambda: mod.fusion(zg, d.h_llm).sum().backward(), repeats)))

    z = torch.randn(n, mod.latent, requires_grad=True)
    hid = mod.decoder.hidden_state(z).detach().requires_grad_()
    rows.append(
        (
            "ZINB decoder body (Linear, BatchNorm, ReLU)",
            *timeit(lambda: mod.decoder.hidden_state(z).sum().backward(), repeats),
        )
    )
    rows.append(
        (
            "ZINB heads + NLL, fused, chunked (used)",
            *timeit(lambda: mod.decoder.nll(hid, d.target).backward(), repeats),
        )
    )
    wt = mod.decoder.heads.weight.detach()
    g = torch.randn(n, wt.shape[0])

    def heads_gemms():  # the three matrix products the heads cannot avoid: forward, dW, dH
        torch.addmm(mod.decoder.heads.bias.detach(), hid.detach(), wt.t())
        g.t() @ hid.detach()
        g @ wt

    rows.append(("  of which the 3 head GEMMs alone", *timeit(heads_gemms, repeats)))
    if naive:
        target = d.target.dense()

        def naive_zinb():
            snn.zinb_nll(target, *mod.decoder.params(hid)).backward()

        rows.append(("  naive: 3 heads + autograd ZINB on N x M", *timeit(naive_zinb, max(1, repeats // 2))))

    z2 = torch.randn(n, mod.latent, requires_grad=True)
    rows.append(
        (
            "correlation reduction loss",
            *timeit(lambda: snn.correlation_reduction_loss(z, z2).backward(), repeats),
        )
    )
    gen = torch.Generator().manual_seed(0)
    rows.append(
        (
            "spatial loss (SDDMM positives, 10 negatives/spot)",
            *timeit(
                lambda: snn.spatial_regularization_loss(z, d.rows, d.cols, generator=gen).backward(), repeats
            ),
        )
    )
    if naive and n <= 12000:
        adj = torch.from_numpy(inputs.adj_spa.toarray().astype(np.float32))

        def dense_spatial():  # the reference: N x N cosine matrix and masks
            zn = F.normalize(z, dim=1)
            s = torch.sigmoid(zn @ zn.t())
            loss = -(adj * torch.log(s)).mean() - ((1 - adj) * torch.log(1 - s)).mean()
            (loss / 2).backward()

        rows.append(
            ("  naive: dense N x N spatial loss (reference)", *timeit(dense_spatial, max(1, repeats // 2)))
        )

    opt = torch.optim.Adam(mod.parameters(), lr=1e-3, weight_decay=5e-4)
    for p in mod.parameters():
        p.grad = torch.zeros_like(p)
    rows.append(("Adam step", *timeit(opt.step, repeats)))
    return rows


def full_epochs(inputs: tr.TrainInputs, n_epochs: int, fusion: str) -> tuple[float, float, float, float]:
    """Median wall and CPU seconds per epoch of ``train`` (first epoch left out), and its totals."""
    tr.seed_everything(0)
    mod = snn.SemSTModule(inputs.x.shape[1], 384 if fusion != "none" else None, fusion=fusion)
    marks = []
    c0, w0 = time.process_time(), time.perf_counter()
    hist = tr.train(
        mod,
        inputs,
        n_epochs=n_epochs,
        device="cpu",
        progress=False,
        callback=lambda e, _: marks.append(time.process_time()),
    )
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    cpu_epochs = np.diff(marks) if len(marks) > 1 else np.array([cpu])
    wall_epoch = float(np.median(hist["seconds"][1:])) if n_epochs > 1 else float(hist["seconds"][0])
    return wall_epoch, float(np.median(cpu_epochs)), wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the full-training measurement")
    ap.add_argument("--synthetic", type=int, nargs="*", default=[10000], help="synthetic sizes (0: none)")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive reference formulations")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, load {os.getloadavg()}"
    )
    sets = []
    if args.data.exists():
        sets.append(dlpfc_inputs(args.data))
    else:
        print(f"(no DLPFC file at {args.data}: skipped)", file=sys.stderr)
    sets += [synthetic_inputs(n) for n in args.synthetic if n > 0]
    for inputs, desc in sets:
        print(f"\n## {desc}\n")
        print("| component (forward + backward) | wall ms | CPU ms |\n|---|---|---|")
        for name, wall, cpu in components(inputs, args.repeats, naive=not args.no_naive):
            print(f"| {name} | {1e3 * wall:.1f} | {1e3 * cpu:.1f} |")
        for fusion in ("fsm", "none"):
            wall_epoch, cpu_epoch, wall, cpu = full_epochs(inputs, args.epochs, fusion)
            print(
                f"| **full epoch, fusion={fusion}** (median of {args.epochs - 1}; train() total "
                f"{wall:.1f} s wall, {cpu:.1f} s CPU) | **{1e3 * wall_epoch:.0f}** | **{1e3 * cpu_epoch:.0f}** |"
            )
    print(f"\nload at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
