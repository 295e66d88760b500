"""semst.tl.recluster: the clustering step of tl.domains alone, on the trained embedding of a real slice."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import semst_sc as semst
from semst_sc._constants import Key

EPOCHS = 5  # the embedding only has to exist; what is tested is the clustering after it


@pytest.fixture(scope="module")
def trained():
    a = semst.datasets.demo()
    semst.tl.domains(a, n_domains=7, n_epochs=EPOCHS, progress=False)
    return a


@pytest.fixture(scope="module")
def trained_hops():
    a = semst.datasets.demo()
    semst.tl.domains(a, n_domains=6, n_epochs=EPOCHS, smooth_hops=1, cluster_method="kmeans", progress=False)
    return a


@pytest.mark.parametrize("fixture", ["trained", "trained_hops"])
def test_the_runs_settings_give_the_runs_labels_exactly(fixture, request):
    a = request.getfixturevalue(fixture).copy()
    before = a.obs[Key.obs.domain].copy()
    params = dict(a.uns[Key.uns.semst]["params"])
    semst.tl.recluster(a, params["n_domains"])
    pd.testing.assert_series_equal(a.obs[Key.obs.domain], before)
    assert a.uns[Key.uns.semst]["params"] == params
    # and a setting changed by hand does change them (the comparison above can fail)
    other = semst.tl.recluster(a, params["n_domains"], seed=params["seed"] + 1, smooth=False, copy=True)
    assert not other.obs[Key.obs.domain].equals(before)
    assert other.uns[Key.uns.semst]["params"]["cluster_seed"] == params["seed"] + 1
    assert other.uns[Key.uns.semst]["params"]["seed"] == params["seed"]  # the training seed


def test_another_number_of_domains_under_its_own_key(trained, tmp_path):
    a = trained.copy()
    domains, emb = a.obs[Key.obs.domain].copy(), a.obsm[Key.obsm.semst].copy()
    params = dict(a.uns[Key.uns.semst]["params"])
    semst.tl.recluster(a, 4, key_added="semst_domain_4")
    got = a.obs["semst_domain_4"]
    assert list(got.cat.categories) == ["1", "2", "3", "4"]
    counts = got.value_counts(sort=False).to_numpy()
    assert (np.diff(counts) <= 0).all()  # '1' is the largest
    pd.testing.assert_series_equal(a.obs[Key.obs.domain], domains)
    np.testing.assert_array_equal(a.obsm[Key.obsm.semst], emb)
    assert a.uns[Key.uns.semst]["params"] == params
    rec = a.uns[Key.uns.semst]["reclustered"]["semst_domain_4"]
    assert rec["n_domains"] == 4 and rec["cluster_method"] == params["cluster_method"]
    # h5ad keeps it; the plots read it
    a.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_series_equal(back.obs["semst_domain_4"], got)
    assert back.uns[Key.uns.semst]["reclustered"]["semst_domain_4"]["n_domains"] == 4


def test_estimated_number_replaces_the_runs_domains_and_says_so(trained):
    a = trained.copy()
    semst.tl.recluster(a, k_range=(3, 5))
    run = a.uns[Key.uns.semst]
    sel = run["domain_selection"]
    assert list(sel["n_domains"]) == [3, 4, 5]
    assert run["params"]["n_domains"] == sel["chosen"] == a.obs[Key.obs.domain].cat.categories.size
    assert run["params"]["estimated_n_domains"] is True
    want = semst.tl.estimate_n_domains(a.obsm[Key.obsm.semst], k_range=(3, 5), seed=0)
    np.testing.assert_allclose(sel["score"], want.score)
    # back to a given number: the selection curve no longer describes the domains and is dropped
    semst.tl.recluster(a, 7)
    assert "domain_selection" not in a.uns[Key.uns.semst]
    assert a.uns[Key.uns.semst]["params"]["estimated_n_domains"] is False


def test_copy_leaves_the_input_alone(trained):
    a = trained.copy()
    snap = (a.obs.copy(), dict(a.uns[Key.uns.semst]["params"]))
    out = semst.tl.recluster(a, 3, copy=True)
    assert out.obs[Key.obs.domain].cat.categories.size == 3
    pd.testing.assert_frame_equal(a.obs, snap[0])
    assert a.uns[Key.uns.semst]["params"] == snap[1]


def test_bad_input_is_explained_and_changes_nothing(trained):
    fresh = semst.datasets.demo()
    with pytest.raises(KeyError, match=r"run semst\.tl\.domains\(adata\) first"):
        semst.tl.recluster(fresh, 5)
    a = trained.copy()
    obs = a.obs.copy()
    del a.obsp[Key.obsp.spatial_conn]
    with pytest.raises(KeyError, match=r"obsp\['spatial_connectivities'\] is missing.*smooth=False"):
        semst.tl.recluster(a, 5)
    semst.tl.recluster(a, 5, smooth=False, key_added="no_vote")  # the way out works
    a = trained.copy()
    for kwargs, error, match in (
        ({"n_domains": 1}, ValueError, "between 2 and"),
        ({"n_domains": 3, "cluster_method": "dbscan"}, ValueError, "not a valid choice"),
        ({"n_domains": 3, "smooth_hops": -1}, ValueError, "smooth_hops"),
        ({"n_domains": 3, "seed": 1.5}, TypeError, "seed must be an integer"),
        ({"n_domains": 3, "key_added": ""}, TypeError, "key_added"),
    ):
        with pytest.raises(error, match=match):
            semst.tl.recluster(a, **kwargs)
    pd.testing.assert_frame_equal(a.obs, obs)
    with pytest.raises(TypeError, match=r"not an AnnData.*semst\.tl\.recluster"):
        semst.tl.cluster_embedding(a, 5)
    with pytest.raises(TypeError, match=r"not an AnnData.*semst\.tl\.recluster"):
        semst.tl.estimate_n_domains(a)
