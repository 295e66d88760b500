"""Metrics against hand-computed cases, and semst.tl.evaluate on real annotated data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import semst_sc as semst
from semst_sc._constants import Key
from semst_sc.tl._metrics import acc, ari, contingency, f1_macro, match_labels, nmi, scores


def test_permuted_labels_score_one():
    truth = ["a", "a", "b", "b", "c", "c", "c"]
    pred = [2, 2, 0, 0, 1, 1, 1]
    assert scores(truth, pred) == {"ari": 1.0, "nmi": 1.0, "acc": 1.0, "f1_macro": 1.0}
    assert match_labels(truth, pred) == {"2": "a", "0": "b", "1": "c"}


def test_known_confusion_matrix():
    truth = list("aaaabbbccc")
    pred = [0, 0, 0, 1, 1, 1, 1, 2, 2, 0]
    # contingency (cluster x label):   a  b  c
    #                         0:      3  0  1
    #                         1:      1  3  0
    #                         2:      0  0  2
    table, clusters, labels = contingency(truth, pred)
    np.testing.assert_array_equal(table, [[3, 0, 1], [1, 3, 0], [0, 0, 2]])
    assert list(clusters) == ["0", "1", "2"] and list(labels) == ["a", "b", "c"]
    # best matching 0->a, 1->b, 2->c keeps 3 + 3 + 2 = 8 of 10 spots
    assert match_labels(truth, pred) == {"0": "a", "1": "b", "2": "c"}
    assert acc(truth, pred) == pytest.approx(0.8)
    # after matching, predictions are a a a b b b b c c a:
    #   a: precision 3/4, recall 3/4 -> F1 0.75
    #   b: precision 3/4, recall 3/3 -> F1 2 * 0.75 / 1.75 = 6/7
    #   c: precision 2/2, recall 2/3 -> F1 2 * (2/3) / (5/3) = 0.8
    assert f1_macro(truth, pred) == pytest.approx((0.75 + 6 / 7 + 0.8) / 3)
    assert ari(truth, pred) == pytest.approx(adjusted_rand_score(truth, pred))
    assert nmi(truth, pred) == pytest.approx(normalized_mutual_info_score(truth, pred))


def test_ari_by_hand():
    # pairs: same cluster and same label: only (0, 1) -> 1; expected (3 * 2) / 6 = 1; max (3 + 2) / 2 = 2.5
    # ARI = (1 - 1) / (2.5 - 1) = 0
    assert ari([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0, abs=1e-12)


def test_more_clusters_than_labels_unmatched_count_as_wrong():
    truth = ["a", "a", "b", "b"]
    pred = [0, 1, 2, 2]
    mapping = match_labels(truth, pred)
    assert mapping["2"] == "b" and sorted(v for v in mapping.values() if v is not None) == ["a", "b"]
    assert sum(v is None for v in mapping.values()) == 1
    assert acc(truth, pred) == pytest.approx(3 / 4)
    # a: precision 1, recall 1/2 -> F1 2/3; b: F1 1
    assert f1_macro(truth, pred) == pytest.approx((2 / 3 + 1) / 2)


def test_fewer_clusters_than_labels():
    truth = ["a", "a", "b", "b", "c", "c"]
    pred = [0, 0, 0, 0, 1, 1]
    assert acc(truth, pred) == pytest.approx(4 / 6)
    # cluster 0 takes a (or b): F1 2/3 for it, 0 for the label without a cluster, 1 for c
    assert f1_macro(truth, pred) == pytest.approx((2 / 3 + 0 + 1) / 3)


def test_labels_compared_as_strings_and_bad_input():
    assert acc([1, 2, 2], ["1", "2", "2"]) == 1.0
    with pytest.raises(ValueError, match="same length"):
        acc([1, 2], [1])
    with pytest.raises(ValueError, match="no labelled spots"):
        ari([], [])


def _scored_adata():
    adata = semst.datasets.demo()
    truth = adata.obs[semst.datasets.DEMO_ANNOTATION]
    # a prediction: the annotation renamed, with 100 spots moved to another domain
    rng = np.random.default_rng(0)
    codes = truth.cat.codes.to_numpy().copy()
    moved = rng.choice(adata.n_obs, 100, replace=False)
    codes[moved] = (codes[moved] + 1) % 7
    adata.obs[Key.obs.domain] = pd.Categorical([f"D{c}" for c in codes])
    return adata, moved


def test_evaluate_on_demo(tmp_path):
    adata, _ = _scored_adata()
    res = semst.tl.evaluate(adata, semst.datasets.DEMO_ANNOTATION)
    assert res["acc"] == pytest.approx(1 - 100 / adata.n_obs)
    truth = adata.obs[semst.datasets.DEMO_ANNOTATION].astype(str)
    assert res["ari"] == pytest.approx(adjusted_rand_score(truth, adata.obs[Key.obs.domain]))
    assert res["n_scored"] == adata.n_obs and res["n_unlabelled"] == 0
    assert adata.uns[Key.uns.evaluation] == res
    adata.write_h5ad(tmp_path / "ev.h5ad")
    back = ad.read_h5ad(tmp_path / "ev.h5ad")
    assert back.uns[Key.uns.evaluation]["acc"] == pytest.approx(res["acc"])
    assert back.uns[Key.uns.evaluation]["truth_key"] == semst.datasets.DEMO_ANNOTATION


def test_evaluate_leaves_out_unlabelled_spots():
    adata, _ = _scored_adata()
    truth = adata.obs[semst.datasets.DEMO_ANNOTATION].astype(object).to_numpy()
    truth[:10] = np.nan
    truth[10:15] = ""
    truth[15:20] = "nan"
    adata.obs["truth"] = truth
    res = semst.tl.evaluate(adata, "truth", key_added="ev")
    assert res["n_unlabelled"] == 20 and res["n_scored"] == adata.n_obs - 20
    kept = np.arange(20, adata.n_obs)
    expected = scores(truth[kept].astype(str), adata.obs[Key.obs.domain].to_numpy()[kept].astype(str))
    for key, value in expected.items():
        assert res[key] == pytest.approx(value)
    assert "ev" in adata.uns


def test_evaluate_copy_and_errors():
    adata, _ = _scored_adata()
    out = semst.tl.evaluate(adata, semst.datasets.DEMO_ANNOTATION, copy=True)
    assert isinstance(out, ad.AnnData) and Key.uns.evaluation in out.uns
    assert Key.uns.evaluation not in adata.uns
    with pytest.raises(KeyError, match=r"run semst\.tl\.domains first"):
        semst.tl.evaluate(adata, semst.datasets.DEMO_ANNOTATION, pred_key="missing")
    adata.obs["empty"] = np.nan
    with pytest.raises(ValueError, match="no labelled spot"):
        semst.tl.evaluate(adata, "empty")
    pred = adata.obs[Key.obs.domain].astype(object).to_numpy()
    pred[3] = None
    adata.obs["partial"] = pred
    with pytest.raises(ValueError, match="no domain for 1 labelled spot"):
        semst.tl.evaluate(adata, semst.datasets.DEMO_ANNOTATION, pred_key="partial")
    assert Key.uns.evaluation not in adata.uns
    # scores replace earlier scores, never another entry of uns (the images of a Visium slice, say)
    adata.uns["spatial"] = {"library": {"scalefactors": {"spot_diameter_fullres": 89.0}}}
    with pytest.raises(ValueError, match=r"would overwrite adata\.uns\['spatial'\].*key_added="):
        semst.tl.evaluate(adata, semst.datasets.DEMO_ANNOTATION, key_added="spatial")
    assert adata.uns["spatial"]["library"]["scalefactors"]["spot_diameter_fullres"] == 89.0
    first = semst.tl.evaluate(adata, semst.datasets.DEMO_ANNOTATION)
    assert semst.tl.evaluate(adata, semst.datasets.DEMO_ANNOTATION) == first == adata.uns[Key.uns.evaluation]


def test_metrics_module_does_not_import_torch():
    import subprocess
    import sys

    # the package itself imports torch (tl.domains); the metrics module, loaded on its own, must not
    src = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('m', sys.argv[1]); "
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", src, semst.tl._metrics.__file__], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
