"""The CUDA paths: training, the sparse input, the whole ``tl.domains`` call and the embedding on a GPU.

Every test here needs a CUDA device and is skipped without one (CI has none); the CPU side of the same
code is covered by test_train.py and test_domains.py. The spatial graph is built with scikit-learn and
stored where ``tl.domains`` reuses it, so these tests also run where squidpy is not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import radius_neighbors_graph

import semst_sc as semst
from semst_sc import _train as tr
from semst_sc._constants import Key

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# test_train.py's synthetic two-domain tissue and module factory (--import-mode=importlib adds no path)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import _inputs, _module, _tissue, check_ema_decay_average  # noqa: E402


def test_training_on_cuda_follows_the_cpu():
    """Same seed, same initial weights: the CUDA run's losses track the CPU run's (float32 round-off only)."""
    inputs, _ = _inputs()
    hist = {}
    for dev in ("cpu", "cuda"):
        mod = _module()
        hist[dev] = tr.train(mod, inputs, n_epochs=5, device=dev, seed=0, progress=False)
        emb = tr.embed(mod, inputs, device=dev)
        assert isinstance(emb, np.ndarray) and np.isfinite(emb).all()
    np.testing.assert_allclose(hist["cuda"]["loss"], hist["cpu"]["loss"], rtol=1e-3)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cuda_training_learns_the_two_domains(precision):
    inputs, domain = _inputs()
    mod = _module(precision=precision)
    tr.train(mod, inputs, n_epochs=60, device="cuda", seed=0, progress=False)
    emb = tr.embed(mod, inputs, device="cuda")
    from sklearn.cluster import KMeans

    assert np.isfinite(emb).all()
    labels = KMeans(2, n_init=10, random_state=0).fit_predict(emb)
    assert adjusted_rand_score(domain, labels) > 0.8


def test_bfloat16_on_cuda_rounds_and_tracks_the_float32_loss():
    """precision='bfloat16' on the GPU: the products really round (the first loss differs from float32's)
    and stay within bfloat16's few significant digits of float32 (the learning is checked above)."""
    inputs, _ = _inputs()
    first = {}
    for precision in ("float32", "bfloat16"):
        mod = _module(precision=precision)
        # the first loss is taken before any update, so it does not depend on the number of epochs
        first[precision] = tr.train(mod, inputs, n_epochs=1, device="cuda", seed=0, progress=False)["loss"][0]
    assert first["bfloat16"] != first["float32"]
    np.testing.assert_allclose(first["bfloat16"], first["float32"], rtol=2e-2)


def test_sparse_input_on_cuda(monkeypatch):
    """A sparse expression matrix stays a sparse CSR tensor on the GPU and gives the dense result."""
    inputs, _ = _inputs()
    dense = tr._x_to_torch(inputs.x, torch.device("cuda"), torch.float32)
    assert dense.layout == torch.strided and dense.is_cuda
    monkeypatch.setattr(tr, "SPARSE_X_MAX_DENSITY", 1.0)
    csr = tr._x_to_torch(inputs.x, torch.device("cuda"), torch.float32)
    assert csr.layout == torch.sparse_csr and csr.is_cuda
    losses = []
    for _ in range(2):
        mod = _module()
        losses.append(tr.train(mod, inputs, n_epochs=3, device="cuda", seed=0, progress=False)["loss"])
        monkeypatch.setattr(tr, "SPARSE_X_MAX_DENSITY", 0.0)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)


def _anndata(seed: int = 0) -> ad.AnnData:
    *_, counts, domain = _tissue(seed=seed)
    n = counts.shape[0]
    r, c = np.divmod(np.arange(n), 20)
    a = ad.AnnData(sp.csr_matrix(counts), obsm={Key.obsm.spatial: np.c_[r, c].astype(float) * 10})
    a.var_names = [f"g{i}" for i in range(counts.shape[1])]
    a.obs["truth"] = domain.astype(str)
    a.obsp[Key.obsp.spatial_conn] = sp.csr_matrix(
        radius_neighbors_graph(a.obsm[Key.obsm.spatial], 15.0, include_self=False)
    )
    return a


@pytest.mark.parametrize("fusion", ["none", "fsm"])
def test_domains_on_cuda(fusion):
    a = _anndata()
    if fusion == "fsm":
        a.obsm[Key.obsm.llm] = np.random.default_rng(0).normal(size=(a.n_obs, 8)).astype(np.float32)
    semst.tl.domains(a, n_domains=2, n_epochs=60, fusion=fusion, device="cuda", progress=False, seed=0)
    assert str(a.uns[Key.uns.semst]["params"]["device"]).startswith("cuda")
    assert a.obsm[Key.obsm.semst].dtype == np.float32 and np.isfinite(a.obsm[Key.obsm.semst]).all()
    assert a.obs[Key.obs.domain].nunique() == 2
    assert adjusted_rand_score(a.obs["truth"], a.obs[Key.obs.domain]) > 0.8


def test_domains_automatic_device_is_cuda():
    a = _anndata()
    semst.tl.domains(a, n_domains=2, n_epochs=5, fusion="none", progress=False)
    assert str(a.uns[Key.uns.semst]["params"]["device"]).startswith("cuda")


def test_missing_cuda_index_is_a_clear_error():
    a = _anndata()
    before = set(a.obsm), set(a.obs), set(a.uns)
    bad = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match="device"):
        semst.tl.domains(a, n_domains=2, n_epochs=5, device=bad, progress=False)
    assert (set(a.obsm), set(a.obs), set(a.uns)) == before


def test_ema_decay_on_cuda_ends_on_the_bias_corrected_weight_average():
    check_ema_decay_average("cuda")
