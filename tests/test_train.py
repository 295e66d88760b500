"""Tests of semst_sc._train: devices, seeding, the training loop, determinism, memory, checkpoints."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import kneighbors_graph, radius_neighbors_graph

from semst_sc import _train as tr
from semst_sc.nn import SemSTModule


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread in these tests: fast and stable on a busy 2-core machine (restored afterwards)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _scale(counts: np.ndarray) -> np.ndarray:
    """METHOD.md preprocessing in numpy: per-spot total to 1e4, divide genes by their std, clip at 10."""
    x = counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4
    sd = x.std(0, ddof=1)
    x = x / np.where(sd > 0, sd, 1)
    return np.minimum(x, 10.0).astype(np.float32)


def _tissue(n_rows: int = 15, n_cols: int = 20, n_genes: int = 40, seed: int = 0):
    """A synthetic two-domain tissue: left and right halves express different marker genes."""
    rng = np.random.default_rng(seed)
    r, c = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    coords = np.c_[r.ravel(), c.ravel()].astype(float)
    domain = (coords[:, 1] >= n_cols // 2).astype(int)
    rate = np.full((len(coords), n_genes), 0.5)
    rate[domain == 0, :10] = 3.0
    rate[domain == 1, 10:20] = 3.0
    counts = rng.poisson(rate * rng.uniform(0.7, 1.3, (len(coords), 1))).astype(np.float32)
    x = _scale(counts)
    a_spa = radius_neighbors_graph(coords, 1.5, include_self=True)
    a_fea = kneighbors_graph(x, 5, metric="cosine")
    a_fea = ((a_fea + a_fea.T) > 0).astype(np.float32)
    return sp.csr_matrix(x), sp.csr_matrix(a_spa), sp.csr_matrix(a_fea), counts, domain


def _inputs(llm_dim: int | None = 6, seed: int = 0, **kw) -> tuple[tr.TrainInputs, np.ndarray]:
    x, a_spa, a_fea, _, domain = _tissue(seed=seed, **kw)
    h = (
        None
        if llm_dim is None
        else np.random.default_rng(1).normal(size=(x.shape[0], llm_dim)).astype(np.float32)
    )
    return tr.TrainInputs(x, a_spa, a_fea, x, a_spa, h_llm=h), domain


def _module(n_genes: int = 40, llm_dim: int | None = 6, seed: int = 0, **kw) -> SemSTModule:
    tr.seed_everything(seed)
    fusion = kw.pop("fusion", "fsm" if llm_dim else "none")
    return SemSTModule(n_genes, llm_dim, hidden=32, latent=16, fusion=fusion, **kw)


# -- devices and seeds --------------------------------------------------------------------------------------
def test_resolve_device():
    assert tr.resolve_device("cpu") == torch.device("cpu")
    assert tr.resolve_device(torch.device("cpu")).type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert tr.resolve_device(None).type == expected
    with pytest.raises(ValueError, match="Unknown device"):
        tr.resolve_device("gpu0")
    with pytest.raises(TypeError):
        tr.resolve_device(3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_device_cuda_unavailable_is_a_clear_error():
    for dev in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=r"torch\.cuda\.is_available\(\) is False.*device='cpu'"):
            tr.resolve_device(dev)


@pytest.mark.skipif(
    getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(), reason="has MPS"
)
def test_resolve_device_mps_unavailable():
    with pytest.raises(ValueError, match="MPS"):
        tr.resolve_device("mps")


def test_seed_everything_validates_and_seeds():
    tr.seed_everything(3)
    a = (np.random.rand(), torch.rand(1).item())  # noqa: NPY002 - the legacy global generator is seeded
    tr.seed_everything(3)
    assert a == (np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    with pytest.raises(TypeError):
        tr.seed_everything(1.5)
    with pytest.raises(ValueError):
        tr.seed_everything(-1)


# -- training -----------------------------------------------------------------------------------------------
def test_short_training_decreases_the_loss_and_separates_the_domains():
    inputs, domain = _inputs()
    mod = _module()
    hist = tr.train(mod, inputs, n_epochs=30, device="cpu", seed=0, progress=False)
    assert set(hist) >= {"loss", "zinb", "cr", "spatial", "seconds", "stopped_epoch", "early_stopped"}
    assert hist["stopped_epoch"] == 30 and len(hist["loss"]) == 30
    assert all(np.isfinite(hist[k]).all() for k in ("loss", "zinb", "cr", "spatial"))
    assert hist["loss"][-1] < 0.9 * hist["loss"][0]
    assert hist["zinb"][-1] < hist["zinb"][0]
    emb = tr.embed(mod, inputs, device="cpu")
    assert emb.shape == (300, 16) and emb.dtype == np.float32
    labels = KMeans(2, n_init=10, random_state=0).fit_predict(emb)
    assert adjusted_rand_score(domain, labels) > 0.8  # evaluation only; labels never reach training


def test_training_is_bitwise_deterministic_on_cpu():
    inputs, _ = _inputs()
    embs, hists = [], []
    for _ in range(2):
        mod = _module(seed=7)
        hists.append(tr.train(mod, inputs, n_epochs=8, device="cpu", seed=7, progress=False))
        embs.append(tr.embed(mod, inputs, device="cpu"))
    assert np.array_equal(embs[0], embs[1])
    assert np.array_equal(hists[0]["loss"], hists[1]["loss"])
    other = _module(seed=8)
    tr.train(other, inputs, n_epochs=8, device="cpu", seed=8, progress=False)
    assert not np.array_equal(embs[0], tr.embed(other, inputs, device="cpu"))


def test_narrow_panels_train_on_the_input_propagated_once(monkeypatch):
    """n_genes <= hidden: the loop reads adj @ x made once; the same training as propagating x @ W each epoch."""
    inputs, _ = _inputs(llm_dim=None)
    assert (
        tr._prepare(inputs, _module(llm_dim=None), torch.device("cpu"), with_target=False).x_propagated
        is None
    )

    def run():
        tr.seed_everything(3)
        mod = SemSTModule(40, None, hidden=48, latent=16, fusion="none")
        hist = tr.train(mod, inputs, n_epochs=6, device="cpu", seed=3, progress=False)
        return mod, hist, tr.embed(mod, inputs, device="cpu")

    mod, hist, emb = run()
    data = tr._prepare(inputs, mod, torch.device("cpu"), with_target=False)
    assert data.x_propagated is not None and data.x_propagated[0].shape == (300, 40)
    monkeypatch.setattr(SemSTModule, "propagate_input", lambda self, x, a, b: None)  # the per-epoch products
    _, hist_plain, emb_plain = run()
    np.testing.assert_allclose(hist["loss"], hist_plain["loss"], rtol=1e-4)
    np.testing.assert_allclose(emb, emb_plain, rtol=1e-3, atol=1e-4)
    assert not np.array_equal(emb, emb_plain)  # the two paths really differ (in the order of float sums)


def test_training_restores_deterministic_flag():
    before = torch.are_deterministic_algorithms_enabled()
    fill_before = torch.utils.deterministic.fill_uninitialized_memory
    inputs, _ = _inputs()
    tr.train(_module(), inputs, n_epochs=1, device="cpu", progress=False)
    assert torch.are_deterministic_algorithms_enabled() == before
    assert torch.utils.deterministic.fill_uninitialized_memory == fill_before
    seen = []

    def during(epoch, parts):
        seen.append(
            (
                torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
            )
        )

    prev = torch.get_deterministic_debug_mode()
    try:
        for mode in (0, 1, 2):  # off, warn, error: each restored after training
            torch.set_deterministic_debug_mode(mode)
            tr.train(_module(), inputs, n_epochs=1, device="cpu", progress=False, callback=during)
            assert torch.get_deterministic_debug_mode() == mode
    finally:
        torch.set_deterministic_debug_mode(prev)
    assert seen == [(True, True)] * 3  # deterministic algorithms, warning where one has none


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_cpu_adam_steps_like_torchs_adam_bit_for_bit(weight_decay):
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU())]
    nets.append(copy.deepcopy(nets[0]))
    for net in nets:  # a parameter that never gets a gradient, as torch leaves it alone
        net.register_parameter("unused", torch.nn.Parameter(torch.ones(3)))
    opts = [
        torch.optim.Adam(nets[0].parameters(), lr=1e-2, weight_decay=weight_decay),
        tr._CPUAdam(nets[1].parameters(), lr=1e-2, weight_decay=weight_decay),
    ]
    x = torch.randn(40, 8)
    for _ in range(50):
        for net, opt in zip(nets, opts, strict=True):
            opt.zero_grad(set_to_none=True)
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(nets[1].unused, torch.ones(3))
    assert isinstance(tr.optimizer(nets[0].parameters(), torch.device("cpu"), 1e-3, 0.0), tr._CPUAdam)
    assert isinstance(tr.optimizer(nets[0].parameters(), torch.device("meta"), 1e-3, 0.0), torch.optim.Adam)


def test_cpu_training_does_not_load_torchs_compiler_and_keeps_its_setting():
    """torch.optim and torch 2.13's use_deterministic_algorithms import the compiler (1.2-1.5 s); training
    on the CPU must not.

    In a fresh interpreter: training is deterministic without loading ``torch._dynamo`` or
    ``torch._inductor``; once the user has loaded them, training still runs deterministically, gives the
    same bits, and leaves the inductor's ``deterministic`` setting as it was.
    """
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np, scipy.sparse as sp, torch
        from semst_sc import _train as tr
        from semst_sc.nn import SemSTModule
        torch.set_num_threads(1)
        rng = np.random.default_rng(0)
        x = sp.csr_matrix(rng.poisson(1.0, (60, 8)).astype(np.float32))
        a = sp.csr_matrix(sp.eye(60, dtype=np.float32) + sp.eye(60, k=1, dtype=np.float32))
        inputs = tr.TrainInputs(x, a, a, x, a)
        seen = []
        def during(epoch, parts):
            seen.append(torch.are_deterministic_algorithms_enabled())
        def run():
            tr.seed_everything(0)
            mod = SemSTModule(8, None, hidden=16, latent=8, fusion="none")
            tr.train(mod, inputs, n_epochs=2, device="cpu", progress=False, callback=during)
            return tr.embed(mod, inputs, "cpu")
        first = run()
        loaded_by_training = sorted(m for m in ("torch._dynamo", "torch._inductor") if m in sys.modules)
        import torch._inductor.config as inductor_config
        inductor_config.deterministic = True  # the user's own setting, with torch's flag off
        second = run()
        print(json.dumps({
            "loaded_by_training": loaded_by_training,
            "during": seen,
            "after": torch.are_deterministic_algorithms_enabled(),
            "inductor_after": inductor_config.deterministic,
            "same": bool(np.array_equal(first, second)),
        }))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["loaded_by_training"] == []
    assert out["during"] == [True] * 4
    assert out["after"] is False
    assert out["inductor_after"] is True
    assert out["same"]  # the two ways of setting the flag train the same bits


@pytest.mark.parametrize("zinb_fraction", [1.0, 0.5])
def test_training_reads_no_uninitialised_memory(monkeypatch, zinb_fraction):
    # CPU training switches torch's NaN fill of new tensors off for speed; with it on, any read of memory
    # that was never written would change the result (NaN), so both runs must agree bit for bit
    inputs, _ = _inputs()
    embs = []
    for fill in (False, True):
        monkeypatch.setattr(tr, "FILL_UNINITIALIZED_MEMORY", fill)
        mod = _module(seed=3)
        tr.train(mod, inputs, n_epochs=5, device="cpu", seed=3, progress=False, zinb_fraction=zinb_fraction)
        embs.append(tr.embed(mod, inputs, device="cpu"))
    assert np.isfinite(embs[0]).all()
    assert np.array_equal(embs[0], embs[1])


@pytest.mark.parametrize("fusion", ["concat", "add", "cross_attention", "none"])
def test_training_runs_with_every_fusion(fusion):
    inputs, _ = _inputs(llm_dim=None if fusion == "none" else 8)
    mod = _module(llm_dim=None if fusion == "none" else 8, fusion=fusion)
    hist = tr.train(mod, inputs, n_epochs=3, device="cpu", progress=False)
    assert np.isfinite(hist["loss"]).all()


def test_counts_mode_and_sparse_x_path():
    x, a_spa, a_fea, counts, _ = _tissue()
    sf = counts.sum(1) / np.median(counts.sum(1))
    inputs = tr.TrainInputs(x, a_spa, a_fea, sp.csr_matrix(counts), a_spa, size_factors=sf)
    mod = _module(llm_dim=None, decoder="counts")
    old = tr.SPARSE_X_MAX_DENSITY
    try:
        tr.SPARSE_X_MAX_DENSITY = 1.0  # force the sparse x @ W path
        hist = tr.train(mod, inputs, n_epochs=15, device="cpu", progress=False)
    finally:
        tr.SPARSE_X_MAX_DENSITY = old
    assert hist["loss"][-1] < hist["loss"][0]
    with pytest.raises(ValueError, match="size_factors"):
        tr.train(_module(llm_dim=None), inputs, n_epochs=1, progress=False)


def test_early_stopping_is_label_free_and_configurable():
    inputs, _ = _inputs()
    hist = tr.train(
        _module(),
        inputs,
        n_epochs=200,
        device="cpu",
        progress=False,
        early_stopping={"patience": 3, "tol": 0.05, "min_epochs": 5},
    )
    assert hist["early_stopped"] and hist["stopped_epoch"] < 200
    assert len(hist["loss"]) == hist["stopped_epoch"]
    with pytest.raises(ValueError, match="patience"):
        tr.train(_module(), inputs, n_epochs=2, progress=False, early_stopping={"wait": 3})


def test_callback_can_stop_training():
    inputs, _ = _inputs()
    seen = []

    def cb(epoch, losses):
        seen.append((epoch, sorted(losses)))
        return epoch == 2

    hist = tr.train(_module(), inputs, n_epochs=10, device="cpu", progress=False, callback=cb)
    assert hist["stopped_epoch"] == 3 and not hist["early_stopped"]
    assert seen[0] == (0, ["cr", "loss", "spatial", "zinb"])


def test_bad_inputs_are_clear_errors():
    inputs, _ = _inputs()
    mod = _module()
    with pytest.raises(ValueError, match="h_llm"):
        tr.train(
            mod,
            tr.TrainInputs(inputs.x, inputs.adj_spa, inputs.adj_fea, inputs.x, inputs.adj_spa),
            n_epochs=1,
        )
    bad = np.asarray(inputs.h_llm).copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tr.train(
            mod,
            tr.TrainInputs(inputs.x, inputs.adj_spa, inputs.adj_fea, inputs.x, inputs.adj_spa, h_llm=bad),
            n_epochs=1,
        )
    with pytest.raises(ValueError, match="one row per spot"):
        tr.train(
            mod,
            tr.TrainInputs(inputs.x, inputs.adj_spa, inputs.adj_fea, inputs.x, inputs.adj_spa, h_llm=bad[:5]),
            n_epochs=1,
        )
    with pytest.raises(TypeError, match="scipy sparse"):
        tr.train(
            mod,
            tr.TrainInputs(inputs.x, inputs.adj_spa.toarray(), inputs.adj_fea, inputs.x, inputs.adj_spa),
            n_epochs=1,
        )
    with pytest.raises(ValueError, match="n_epochs"):
        tr.train(mod, inputs, n_epochs=0)
    with pytest.raises(ValueError, match="genes"):
        tr.train(_module(n_genes=41), inputs, n_epochs=1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            tr.train(mod, inputs, n_epochs=1, device="cuda")


def test_zinb_blocks_partition_the_spots_and_estimate_the_full_loss():
    inputs, _ = _inputs()
    mod = _module()
    data = tr._prepare(inputs, mod, torch.device("cpu"), with_target=True)
    with torch.no_grad():
        out = mod(data.x, data.adj_spa, data.adj_fea, data.h_llm, decode=False)
        edges = (data.rows, data.cols)
        _, full = mod.loss(out, data.target, edges)
        blocks = tr._zinb_blocks(inputs, 0.3, seed=0, device=torch.device("cpu"))
        assert len(blocks) == 4  # ceil(1 / 0.3)
        idx = np.concatenate([b[0].numpy() for b in blocks])
        assert np.array_equal(np.sort(idx), np.arange(inputs.n_obs))  # each spot in exactly one block
        assert sum(b[1].nnz for b in blocks) == data.target.nnz
        parts = [mod.loss(out, t, edges, zinb_index=i)[1] for i, t in blocks]
    # the size-weighted mean of the block losses is the full loss: each block's is an unbiased estimate
    weighted = sum(len(i) * p["zinb"] for (i, _), p in zip(blocks, parts, strict=True)) / inputs.n_obs
    assert weighted == pytest.approx(full["zinb"], rel=1e-5)
    assert all(p["cr"] == pytest.approx(full["cr"]) for p in parts)  # the other terms see every spot
    assert len({round(p["zinb"], 6) for p in parts}) == 4
    assert tr._zinb_blocks(inputs, 1.0, seed=0, device=torch.device("cpu")) is None


def test_training_with_a_zinb_fraction_is_deterministic_and_learns():
    inputs, domain = _inputs()
    runs = []
    for _ in range(2):
        mod = _module(seed=3)
        hist = tr.train(mod, inputs, n_epochs=30, device="cpu", seed=3, progress=False, zinb_fraction=0.5)
        runs.append((hist, tr.embed(mod, inputs, device="cpu")))
    (h1, e1), (h2, e2) = runs
    assert np.array_equal(e1, e2) and np.array_equal(h1["loss"], h2["loss"])
    assert np.mean(h1["zinb"][-4:]) < np.mean(h1["zinb"][:4])
    labels = KMeans(2, n_init=10, random_state=0).fit_predict(e1)
    assert adjusted_rand_score(domain, labels) > 0.8  # evaluation only
    full = _module(seed=3)
    tr.train(full, inputs, n_epochs=30, device="cpu", seed=3, progress=False, zinb_fraction=1.0)
    assert not np.array_equal(e1, tr.embed(full, inputs, device="cpu"))


@pytest.mark.parametrize(
    ("value", "exc"),
    [(0, ValueError), (-0.5, ValueError), (1.01, ValueError), (True, TypeError), ("1", TypeError)],
)
def test_bad_zinb_fraction_is_a_clear_error(value, exc):
    inputs, _ = _inputs()
    with pytest.raises(exc, match="zinb_fraction"):
        tr.train(_module(), inputs, n_epochs=1, zinb_fraction=value)


def test_ema_decay_ends_on_the_bias_corrected_weight_average():
    check_ema_decay_average("cpu")


def check_ema_decay_average(device: str) -> None:
    """Train with ema_decay on ``device``; the final weights must be the bias-corrected weighted mean of
    the per-epoch weights (test_cuda.py runs the same check on a GPU)."""
    inputs, _ = _inputs()
    decay, n = 0.8, 12
    seen: list[dict[str, torch.Tensor]] = []  # the trained (not averaged) weights after every epoch
    mod = _module(seed=2)
    names = [k for k, v in mod.state_dict().items() if v.dtype.is_floating_point]
    start = {k: v.clone() for k, v in mod.state_dict().items()}

    def keep(epoch, losses):
        seen.append({k: v.detach().cpu().clone() for k, v in mod.state_dict().items()})

    hist = tr.train(
        mod, inputs, n_epochs=n, device=device, seed=2, progress=False, ema_decay=decay, callback=keep
    )
    assert len(seen) == n == hist["stopped_epoch"]
    w = np.array([(1 - decay) * decay ** (n - 1 - s) for s in range(n)]) / (1 - decay**n)
    assert w.sum() == pytest.approx(1.0)  # a weighted mean of w_1..w_n: the initial weights take no part
    final = {k: v.cpu() for k, v in mod.state_dict().items()}
    for k in names:
        expect = sum(float(ws) * snap[k].double() for ws, snap in zip(w, seen, strict=True))
        torch.testing.assert_close(final[k].double(), expect, rtol=1e-5, atol=1e-6)
    moved = [k for k in names if not torch.equal(seen[-1][k], seen[0][k])]
    assert moved and any(not torch.equal(final[k], seen[-1][k]) for k in moved)  # not the last weights
    assert any(not torch.equal(final[k], start[k]) for k in moved)
    # integer buffers (batch-norm counters) follow the trained module
    for k, v in final.items():
        if not v.dtype.is_floating_point:
            assert torch.equal(v, seen[-1][k])


def test_ema_decay_zero_keeps_the_last_weights_and_averaging_is_deterministic():
    inputs, _ = _inputs()
    last: dict[str, torch.Tensor] = {}
    mod = _module(seed=4)

    def keep(epoch, losses):
        last.update({k: v.detach().clone() for k, v in mod.state_dict().items()})

    tr.train(mod, inputs, n_epochs=8, device="cpu", seed=4, progress=False, ema_decay=0.0, callback=keep)
    assert all(torch.equal(v, last[k]) for k, v in mod.state_dict().items())
    runs = []
    for _ in range(2):
        m = _module(seed=4)
        tr.train(m, inputs, n_epochs=8, device="cpu", seed=4, progress=False, ema_decay=0.9)
        runs.append(tr.embed(m, inputs, device="cpu"))
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], tr.embed(mod, inputs, device="cpu"))


@pytest.mark.parametrize(
    ("value", "exc"),
    [(1, ValueError), (1.5, ValueError), (-0.1, ValueError), (True, TypeError), ("0.99", TypeError)],
)
def test_bad_ema_decay_is_a_clear_error(value, exc):
    inputs, _ = _inputs()
    with pytest.raises(exc, match="ema_decay"):
        tr.train(_module(), inputs, n_epochs=1, ema_decay=value)


def test_checkpoint_roundtrip(tmp_path):
    inputs, _ = _inputs()
    mod = _module()
    hist = tr.train(mod, inputs, n_epochs=3, device="cpu", progress=False)
    path = tr.save_checkpoint(tmp_path / "m.pt", mod, history=hist, extra={"seed": 0})
    clone, hist2, extra = tr.load_checkpoint(path)
    assert extra == {"seed": 0}
    np.testing.assert_array_equal(hist2["loss"], hist["loss"])
    np.testing.assert_array_equal(tr.embed(clone, inputs, "cpu"), tr.embed(mod, inputs, "cpu"))
    with pytest.raises(FileNotFoundError):
        tr.load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.slow
def test_memory_stays_linear_in_the_number_of_spots():
    """30k spots: an N x N float32 matrix would be 3.6 GB (bool: 0.9 GB); the peak must grow far less."""
    script = textwrap.dedent(
        """
        import json, resource, sys
        import numpy as np, scipy.sparse as sp, torch
        from sklearn.neighbors import kneighbors_graph
        from semst_sc import _train as tr
        from semst_sc.nn import SemSTModule
        torch.set_num_threads(1)
        n, m = 30000, 16
        rng = np.random.default_rng(0)
        coords = rng.uniform(0, 180, (n, 2))
        x = rng.poisson(1.0, (n, m)).astype(np.float32)
        a_spa = kneighbors_graph(coords, 8)
        a_spa = ((a_spa + a_spa.T) > 0).astype(np.float32)
        a_fea = kneighbors_graph(x, 5)
        a_fea = ((a_fea + a_fea.T) > 0).astype(np.float32)
        h = rng.normal(size=(n, 8)).astype(np.float32)
        inputs = tr.TrainInputs(sp.csr_matrix(x), a_spa, a_fea, sp.csr_matrix(x), a_spa, h_llm=h)
        tr.seed_everything(0)
        mod = SemSTModule(m, 8, hidden=32, latent=16)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak so far: data and imports
        hist = tr.train(mod, inputs, n_epochs=3, device="cpu", progress=False)
        emb = tr.embed(mod, inputs, "cpu")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"growth_mb": (after - before) / 1024, "finite": bool(np.isfinite(emb).all()),
                          "loss": float(hist["loss"][-1])}))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["finite"]
    assert out["growth_mb"] < 600, out  # N x N float32 = 3600 MB, bool = 900 MB; linear: ~0.3 GB
