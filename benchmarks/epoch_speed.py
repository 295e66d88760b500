"""Per-epoch cost of the SemST module, per component, on the real datasets and on synthetic tissue.

Run from the repository root::

    python benchmarks/epoch_speed.py                  # DLPFC 151673 + synthetic 10k spots, 2 threads
    python benchmarks/epoch_speed.py --datasets dlpfc_151673 starmap_mvc osmfish_sscortex --synthetic 0
    python benchmarks/epoch_speed.py --threads 1 --synthetic 0

For every component the forward AND backward pass is timed (median of ``--repeats`` runs after a warm-up),
as wall time and as CPU time of this process. On a shared machine the wall time suffers from other
processes (2-thread runs badly so: the threads wait for each other); the load average is printed so
that a reader can judge. The "naive" rows are the straightforward formulations (three separate heads and
the autograd ZINB formula over the full N x M matrices; the reference's dense N x N spatial loss) for
comparison: they are NOT used by semst-sc.

The real datasets' inputs are the ones ``semst.tl.domains`` trains on, built by ``tl._semst.SemST`` with
its defaults (2000 highly variable genes, the radius spatial graph, the cosine feature graph). The ZINB
loss is timed on the whole target and on one block of ``zinb_fraction`` of the spots, which is what a
training epoch reconstructs. The language-model input is a random 384-wide matrix (MiniLM width): only its cost
matters here. The synthetic tissue is a random sparse matrix (3000 genes, 19 % non-zero) on a grid with a
56-NN spatial graph, as many neighbours as DLPFC's radius graph.
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
from semst_sc._constants import Default

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, load, pop_truth


# -- inputs ---------------------------------------------------------------------------------------------
def dataset_inputs(name: str) -> tuple[tr.TrainInputs, str]:
    """The inputs ``tl.domains`` trains on for one of the real datasets (annotation removed first).

    Built by ``tl._semst.SemST``, the object ``tl.domains`` trains, with a random 384-wide ``X_llm`` so that
    the FSM rows have a language-model input; its own module is not used here.
    """
    from semst_sc._constants import Key
    from semst_sc.tl._semst import SemST

    adata, truth_key, _ = load(name)
    pop_truth(adata, truth_key)  # never read here; removed so that nothing could
    adata.obsm[Key.obsm.llm] = np.random.default_rng(0).normal(size=(adata.n_obs, 384)).astype(np.float32)
    model = SemST(adata, seed=0)
    d = model.data
    x = d.x
    desc = (
        f"{name}: {x.shape[0]} spots x {x.shape[1]} genes, x {100 * x.nnz / np.prod(x.shape):.1f} % non-zero, "
        f"{d.adj_spa.nnz / x.shape[0]:.1f} spatial / {d.adj_fea.nnz / x.shape[0]:.1f} feature neighbours per spot"
    )
    return model._inputs(), desc


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
    if d.x_propagated is not None:  # n_genes <= hidden: training reads A X made once instead of the above
        ax_spa, ax_fea = d.x_propagated

        def gcns_from_propagated():
            hs = mod.gcn_spa.forward_from_propagated(ax_spa, d.adj_spa)
            hf = mod.gcn_fea.forward_from_propagated(ax_fea, d.adj_fea)
            (hs.sum() + hf.sum()).backward()

        rows.append(
            (
                "  used instead of both rows above: (A X) W, A X made once, + layer 2",
                *timeit(gcns_from_propagated, repeats),
            )
        )

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
            "ZINB heads + NLL, fused, chunked, all spots",
            *timeit(lambda: mod.decoder.nll(hid, d.target).backward(), repeats),
        )
    )
    blocks = tr._zinb_blocks(inputs, Default.zinb_fraction, 0, dev)
    if blocks:
        idx, block_target = blocks[0]
        hid_block = hid.detach()[idx].requires_grad_()
        rows.append(
            (
                f"  the same on one block ({len(idx)} spots, zinb_fraction={Default.zinb_fraction}; used)",
                *timeit(lambda: mod.decoder.nll(hid_block, block_target).backward(), repeats),
            )
        )
    wt = mod.decoder.heads.weight.detach()
    g = torch.randn(n, wt.shape[0])

    # into buffers kept between calls, as the fused loss does: a fresh N x 3M output would add the page
    # faults of its first touch (on DLPFC about as long as the products themselves)
    logits_buf = torch.empty(n, wt.shape[0])
    grad_w_buf = torch.empty_like(wt)
    grad_h_buf = torch.empty(n, wt.shape[1])

    def heads_gemms():  # the three matrix products the heads cannot avoid: forward, dW, dH
        torch.addmm(mod.decoder.heads.bias.detach(), hid.detach(), wt.t(), out=logits_buf)
        torch.mm(g.t(), hid.detach(), out=grad_w_buf)
        torch.mm(g, wt, out=grad_h_buf)

    rows.append(("  of which the 3 head GEMMs alone, all spots", *timeit(heads_gemms, repeats)))
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
    ap.add_argument(
        "--datasets",
        nargs="*",
        default=["dlpfc_151673"],
        choices=list(DATASETS),
        help="real datasets to time",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, load {os.getloadavg()}"
    )
    sets = [dataset_inputs(name) for name in args.datasets]
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
