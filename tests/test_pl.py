"""semst.pl: reference images, colours, errors, and no torch import."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.testing.compare import compare_images
from sklearn.metrics import adjusted_rand_score

import semst_sc as semst
from semst_sc._constants import Key
from semst_sc.pl._palette import NA_COLOR, SEMST_PALETTE

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

# the case definitions are shared with the script that regenerates the reference images
_spec = importlib.util.spec_from_file_location("make_baseline_images", HERE / "make_baseline_images.py")
mbi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mbi)

#: RMS tolerance (0-255 scale) of the image comparisons: absorbs anti-aliasing and font rasterising
#: differences; a wrong colour for one domain or a missing panel costs far more (see
#: test_image_comparison_detects_a_wrong_colour).
TOL = 2.0
TRUTH, DOMAIN = mbi.TRUTH, mbi.DOMAIN
LAYERS = ["Layer1", "Layer2", "Layer3", "Layer4", "Layer5", "Layer6", "WM"]


@pytest.fixture(scope="module")
def case_input():
    return mbi.make_input()


@pytest.fixture
def adata(case_input):
    return case_input.copy()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _small(n_side: int = 12, seed: int = 0) -> ad.AnnData:
    """A small synthetic tissue: a grid of spots in three horizontal bands, with a fake semst result."""
    yy, xx = np.mgrid[0:n_side, 0:n_side]
    coords = np.c_[xx.ravel(), yy.ravel()].astype(float)
    band = (coords[:, 1] * 3 // n_side).astype(int)
    rng = np.random.default_rng(seed)
    a = ad.AnnData(obs=pd.DataFrame(index=[f"s{i}" for i in range(coords.shape[0])]))
    a.obsm["spatial"] = coords
    a.obs["truth"] = pd.Categorical(np.array(["a", "b", "c"])[band])
    a.obs[DOMAIN] = pd.Categorical(np.array(["2", "3", "1"])[band], categories=["1", "2", "3"])
    a.obsm[Key.obsm.semst] = (np.eye(3)[band] + 0.1 * rng.normal(size=(coords.shape[0], 3))).astype(
        np.float32
    )
    a.uns[Key.uns.semst] = {
        "history": {"loss": np.linspace(2, 1, 20), "zinb": np.linspace(1.5, 0.8, 20)},
        "domain_selection": {
            "n_domains": np.arange(2, 6),
            "score": np.array([0.1, 0.5, 0.3, 0.2]),
            "criterion": "silhouette",
            "chosen": 3,
        },
    }
    return a


def _facecolors(ax) -> np.ndarray:
    """Hex colour of every dot of the (single) scatter of ``ax``."""
    # squidpy adds its scatter to the axes twice: keep distinct objects
    colls = list({id(c): c for c in ax.collections if len(c.get_offsets()) > 1}.values())
    assert len(colls) == 1
    return np.array([to_hex(c) for c in colls[0].get_facecolors()])


# ----------------------------------------------------------------------------------------------------------
# reference images


@pytest.mark.parametrize("name", list(mbi.CASES))
def test_matches_reference_image(case_input, name, tmp_path):
    expected = mbi.BASELINE_DIR / f"{name}.png"
    assert expected.exists(), f"missing reference image; run python tests/make_baseline_images.py {name}"
    actual = tmp_path / f"{name}.png"
    mbi.render(name, case_input, actual)
    err = compare_images(str(expected), str(actual), tol=TOL)
    assert err is None, err


def test_image_comparison_detects_a_wrong_colour(case_input, tmp_path):
    """The tolerance is tight enough to catch two domains with swapped colours."""
    a = case_input.copy()
    colors = list(SEMST_PALETTE[:8])
    colors[0], colors[1] = colors[1], colors[0]
    a.uns[Key.colors(DOMAIN)] = colors
    actual = tmp_path / "spatial.png"
    mbi.render("spatial", a, actual)
    assert compare_images(str(mbi.BASELINE_DIR / "spatial.png"), str(actual), tol=TOL) is not None


# ----------------------------------------------------------------------------------------------------------
# spatial and palettes


def test_spatial_stores_palette_and_draws_it(adata):
    assert Key.colors(DOMAIN) not in adata.uns
    ax = semst.pl.spatial(adata, return_ax=True)
    colors = list(adata.uns[Key.colors(DOMAIN)])
    assert colors == list(SEMST_PALETTE[:8])
    drawn = _facecolors(ax)
    expected = np.array(colors)[adata.obs[DOMAIN].cat.codes.to_numpy()]
    np.testing.assert_array_equal(drawn, expected)
    assert ax.get_title() == DOMAIN


def test_spatial_keeps_a_valid_user_palette(adata):
    mine = ["#000000", "#111111", "#222222", "#333333", "#444444", "#555555", "#666666", "#777777"]
    adata.uns[Key.colors(DOMAIN)] = list(mine)
    ax = semst.pl.spatial(adata, return_ax=True)
    assert list(adata.uns[Key.colors(DOMAIN)]) == mine
    np.testing.assert_array_equal(_facecolors(ax), np.array(mine)[adata.obs[DOMAIN].cat.codes.to_numpy()])


@pytest.mark.parametrize("bad", [["#000000", "#111111"], ["not-a-colour"] * 8])
def test_spatial_replaces_an_invalid_palette(adata, bad):
    adata.uns[Key.colors(DOMAIN)] = bad
    semst.pl.spatial(adata)
    assert list(adata.uns[Key.colors(DOMAIN)]) == list(SEMST_PALETTE[:8])


def test_spatial_explicit_palette_is_used_and_stored(adata):
    ax = semst.pl.spatial(adata, palette="tab10", return_ax=True)
    tab10 = [to_hex(c) for c in matplotlib.colormaps["tab10"].colors[:8]]
    assert list(adata.uns[Key.colors(DOMAIN)]) == tab10
    np.testing.assert_array_equal(_facecolors(ax), np.array(tab10)[adata.obs[DOMAIN].cat.codes.to_numpy()])


def test_scanpy_reuses_the_palette(adata):
    import scanpy as sc

    semst.pl.spatial(adata)
    ax = sc.pl.embedding(adata, basis="spatial", color=DOMAIN, show=False)
    expected = np.array(adata.uns[Key.colors(DOMAIN)])[adata.obs[DOMAIN].cat.codes.to_numpy()]
    np.testing.assert_array_equal(_facecolors(ax), expected)


def test_spatial_several_keys_side_by_side(adata):
    axes = semst.pl.spatial(adata, color=[DOMAIN, TRUTH, "array_row"], return_ax=True)
    assert [a.get_title() for a in axes] == [DOMAIN, TRUTH, "array_row"]
    assert len(adata.uns[Key.colors(TRUTH)]) == 7
    assert "array_row_colors" not in adata.uns  # continuous: no palette


def test_spatial_one_panel_per_slice(adata):
    a, b = adata.copy(), adata.copy()
    a.obs_names = [f"a-{n}" for n in a.obs_names]
    b.obs_names = [f"b-{n}" for n in b.obs_names]
    both = ad.concat([a, b], label="slice", keys=["A", "B"])
    axes = semst.pl.spatial(both, library_key="slice", return_ax=True)
    assert [a.get_title() for a in axes] == [f"{DOMAIN} (A)", f"{DOMAIN} (B)"]
    # each panel draws only its own slice's spots (squidpy may stack several collections of them)
    assert [max(len(c.get_offsets()) for c in ax.collections) for ax in axes] == [adata.n_obs, adata.n_obs]
    axes = semst.pl.spatial(both, color=[DOMAIN, TRUTH], library_key="slice", library_id="B", return_ax=True)
    assert [a.get_title() for a in axes] == [f"{DOMAIN} (B)", f"{TRUTH} (B)"]
    with pytest.raises(ValueError, match="got 1 axes for 2 panels"):
        semst.pl.spatial(both, library_key="slice", ax=[plt.subplots()[1]])
    with pytest.raises(KeyError, match="section"):
        semst.pl.spatial(both, library_key="section")
    # slices named by numbers: each panel still gets only its own spots
    both.obs["number"] = pd.Categorical(np.where(both.obs["slice"] == "A", 1, 2))
    axes = semst.pl.spatial(both, library_key="number", return_ax=True)
    assert [a.get_title() for a in axes] == [f"{DOMAIN} (1)", f"{DOMAIN} (2)"]
    assert [max(len(c.get_offsets()) for c in ax.collections) for ax in axes] == [adata.n_obs, adata.n_obs]
    both.obs["plain"] = np.asarray(both.obs["number"], dtype=np.int64)
    with pytest.raises(TypeError, match=r"must be categorical.*astype\('category'\)"):
        semst.pl.spatial(both, library_key="plain")


def test_spatial_into_given_axes_and_save(adata, tmp_path):
    _fig, ax = plt.subplots()
    out = semst.pl.spatial(adata, ax=ax, save=tmp_path / "sub" / "domains.png")
    assert out is None
    assert len(ax.collections) >= 1
    assert (tmp_path / "sub" / "domains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spatial_result_survives_write_h5ad(adata, tmp_path):
    semst.pl.spatial(adata, color=[DOMAIN, TRUTH])
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert list(back.uns[Key.colors(DOMAIN)]) == list(adata.uns[Key.colors(DOMAIN)])


# ----------------------------------------------------------------------------------------------------------
# compare


def test_compare_recolours_by_hungarian_matching(adata):
    axes = semst.pl.compare(adata, TRUTH, DOMAIN, return_ax=True)
    truth_colors = list(adata.uns[Key.colors(TRUTH)])
    assert truth_colors == list(SEMST_PALETTE[:7])
    pred = adata.obs[DOMAIN].to_numpy().astype(str)
    drawn = _facecolors(axes[1])
    for layer_idx, dom in enumerate(mbi.PERM + 1):  # by construction domain PERM[i]+1 is layer i
        got = set(drawn[pred == str(dom)])
        assert got == {truth_colors[layer_idx]}, (dom, got)
    extra = set(drawn[pred == "8"])
    assert len(extra) == 1 and extra.isdisjoint(truth_colors)  # unmatched domain: a colour of its own
    # the annotation panel uses the stored palette
    np.testing.assert_array_equal(
        _facecolors(axes[0]), np.array(truth_colors)[adata.obs[TRUTH].cat.codes.to_numpy()]
    )
    # the legend names the matched layer
    labels = [t.get_text() for t in axes[1].get_legend().get_texts()]
    assert f"{mbi.PERM[0] + 1} (Layer1)" in labels and "8" in labels


def test_compare_title_has_ari(adata):
    axes = semst.pl.compare(adata, TRUTH, DOMAIN, return_ax=True)
    ari = adjusted_rand_score(adata.obs[TRUTH], adata.obs[DOMAIN])
    assert axes[0].get_title() == TRUTH
    assert axes[1].get_title() == f"{DOMAIN} (ARI = {ari:.3f})"


def test_compare_leaves_unlabelled_spots_out_and_grey(adata):
    truth = adata.obs[TRUTH].astype(object)
    unlabelled = np.zeros(adata.n_obs, dtype=bool)
    unlabelled[::5] = True
    truth[unlabelled] = np.nan
    adata.obs[TRUTH] = pd.Categorical(truth, categories=LAYERS)
    axes = semst.pl.compare(adata, TRUTH, DOMAIN, return_ax=True)
    ari = adjusted_rand_score(adata.obs[TRUTH][~unlabelled], adata.obs[DOMAIN][~unlabelled])
    assert f"ARI = {ari:.3f}" in axes[1].get_title()
    assert set(_facecolors(axes[0])[unlabelled]) == {NA_COLOR}


def test_compare_does_not_touch_the_domain_palette_or_columns(adata):
    semst.pl.spatial(adata)
    before = list(adata.uns[Key.colors(DOMAIN)])
    obs_before = adata.obs.copy()
    semst.pl.compare(adata, TRUTH)
    assert list(adata.uns[Key.colors(DOMAIN)]) == before
    pd.testing.assert_frame_equal(adata.obs, obs_before)


# ----------------------------------------------------------------------------------------------------------
# loss, domain selection, embedding


def test_loss_draws_every_recorded_term(adata):
    ax = semst.pl.loss(adata, return_ax=True)
    hist = adata.uns["semst"]["history"]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"total", "ZINB reconstruction", "correlation reduction", "spatial regularisation"}
    np.testing.assert_allclose(lines["total"].get_ydata(), hist["loss"])
    np.testing.assert_array_equal(lines["total"].get_xdata(), np.arange(1, 101))
    assert ax.get_yscale() == "log"
    ax = semst.pl.loss(adata, components=["zinb"], log=False, return_ax=True)
    assert [ln.get_label() for ln in ax.get_lines()] == ["ZINB reconstruction"]
    assert ax.get_yscale() == "linear"


def test_loss_skips_timings_and_stopping_info(adata):
    # tl.domains also records per-epoch seconds and the stopping state in the history: not loss curves
    hist = adata.uns["semst"]["history"]
    hist.update(seconds=np.full(100, 0.5), stopped_epoch=100, early_stopped=False)
    ax = semst.pl.loss(adata, return_ax=True)
    assert "seconds" not in {ln.get_label() for ln in ax.get_lines()}
    assert len(ax.get_lines()) == 4


def test_loss_linear_when_values_not_positive(adata):
    adata.uns["semst"]["history"]["cr"] = np.linspace(-1, 1, 100)
    assert semst.pl.loss(adata, return_ax=True).get_yscale() == "linear"
    with pytest.raises(ValueError, match="positive"):
        semst.pl.loss(adata, log=True)


def test_domain_selection_marks_the_chosen_number(adata):
    ax = semst.pl.domain_selection(adata, return_ax=True)
    sel = adata.uns["semst"]["domain_selection"]
    curve = ax.get_lines()[0]
    np.testing.assert_array_equal(curve.get_xdata(), sel["n_domains"])
    np.testing.assert_allclose(curve.get_ydata(), sel["score"])
    assert "7" in ax.get_title()
    assert ax.get_ylabel().startswith("silhouette")


@pytest.mark.slow
def test_embedding_caches_umap_and_leaves_user_keys_alone(tmp_path):
    a = _small()
    a.obsm["X_umap"] = np.zeros((a.n_obs, 2))
    a.uns["neighbors"] = {"params": {"method": "mine"}}
    axes = semst.pl.embedding(a, truth_key="truth", return_ax=True)
    assert [x.get_title() for x in axes] == [DOMAIN, "truth"]
    np.testing.assert_array_equal(a.obsm["X_umap"], 0)
    assert a.uns["neighbors"] == {"params": {"method": "mine"}}
    assert "connectivities" not in a.obsp and "distances" not in a.obsp
    umap = a.obsm["X_semst_umap"].copy()
    assert umap.shape == (a.n_obs, 2) and np.isfinite(umap).all()
    # the three bands are three clear groups in the UMAP
    cents = np.array([umap[a.obs["truth"] == t].mean(0) for t in "abc"])
    spread = max(
        np.linalg.norm(umap[a.obs["truth"] == t] - cents[i], axis=1).mean() for i, t in enumerate("abc")
    )
    assert min(np.linalg.norm(cents[i] - cents[j]) for i in range(3) for j in range(i + 1, 3)) > 2 * spread
    # reused as long as the embedding is the same; recomputed when it changes
    a.obsm["X_semst_umap"][:] += 1000
    semst.pl.embedding(a)
    assert a.obsm["X_semst_umap"].min() >= 900
    a.obsm[Key.obsm.semst] = a.obsm[Key.obsm.semst][:, ::-1].copy()
    semst.pl.embedding(a)
    assert a.obsm["X_semst_umap"].max() < 900
    a.write_h5ad(tmp_path / "a.h5ad")
    assert "fingerprint" in ad.read_h5ad(tmp_path / "a.h5ad").uns["X_semst_umap"]["params"]


# ----------------------------------------------------------------------------------------------------------
# errors: clear messages, nothing changed


def _snapshot(a):
    return set(a.uns), set(a.obsm), list(a.obs.columns)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a: semst.pl.spatial(a), r"obs\['semst_domain'\] not found: run semst.tl.domains first"),
        (lambda a: semst.pl.compare(a, "truth"), r"run semst.tl.domains first"),
        (lambda a: semst.pl.embedding(a), r"obsm\['X_semst'\] not found: run semst.tl.domains first"),
    ],
)
def test_missing_domains_say_what_to_run(call, match):
    a = _small()
    del a.obs[DOMAIN]
    del a.obsm[Key.obsm.semst]
    before = _snapshot(a)
    with pytest.raises(KeyError, match=match):
        call(a)
    assert _snapshot(a) == before


def test_missing_record_say_what_to_run():
    a = _small()
    del a.uns[Key.uns.semst]
    for fn in (semst.pl.loss, semst.pl.domain_selection):
        with pytest.raises(KeyError, match=r"uns\['semst'\] not found: run semst.tl.domains first"):
            fn(a)
    a.uns[Key.uns.semst] = {"params": {"n_domains": 3}}
    with pytest.raises(KeyError, match="history"):
        semst.pl.loss(a)
    with pytest.raises(KeyError, match=r"n_domains=None"):
        semst.pl.domain_selection(a)


@pytest.mark.parametrize(
    "draw",
    [
        lambda a, **kw: semst.pl.spatial(a, **kw),
        lambda a, **kw: semst.pl.compare(a, TRUTH, **kw),
        lambda a, **kw: semst.pl.loss(a, **kw),
        lambda a, **kw: semst.pl.domain_selection(a, **kw),
    ],
    ids=["spatial", "compare", "loss", "domain_selection"],
)
def test_show_means_what_it_means_in_scanpy(adata, draw, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))  # headless: count the calls
    axes = draw(adata, show=False)  # scanpy's show=False: the axes come back, nothing is shown
    expected = draw(adata, return_ax=True)
    assert type(axes) is type(expected) and axes is not None
    assert shown == []
    assert draw(adata) is None and shown == []
    assert draw(adata, show=True) is None and shown == [1]
    plt.close("all")
    with pytest.raises(TypeError, match="show must be True, False or None"):
        draw(adata, show="yes")
    with pytest.raises(ValueError, match=r"\.xyz is not an image format.*\.png"):
        draw(adata, save="figure.xyz")
    assert plt.get_fignums() == []  # refused before anything was drawn


def test_bad_arguments():
    a = _small()
    with pytest.raises(KeyError, match=r"neither a column of adata\.obs nor a gene"):
        semst.pl.spatial(a, color="nope")
    with pytest.raises(KeyError, match=r"obsm\['coords'\]"):
        semst.pl.spatial(a, spatial_key="coords")
    with pytest.raises(KeyError, match=r"obs\['nope'\]"):
        semst.pl.compare(a, "nope")
    with pytest.raises(ValueError, match="two different columns"):
        semst.pl.compare(a, DOMAIN, DOMAIN)
    with pytest.raises(TypeError, match="AnnData"):
        semst.pl.spatial(a.obs)
    with pytest.raises(TypeError, match="string"):
        semst.pl.spatial(a, color=3)
    with pytest.raises(ValueError, match="colours but there are 3"):
        semst.pl.spatial(a, palette=["red"])
    with pytest.raises(KeyError, match="no recorded loss term"):
        semst.pl.loss(a, components=["kl"])
    with pytest.raises(ValueError, match="one Axes given for 2 panels"):
        semst.pl.spatial(a, color=[DOMAIN, "truth"], ax=plt.subplots()[1])


def test_small_plots_run_end_to_end(tmp_path):
    a = _small()
    for name, fn in [
        ("spatial", lambda: semst.pl.spatial(a, color=[DOMAIN, "truth"], save=tmp_path / "s.png")),
        ("compare", lambda: semst.pl.compare(a, "truth", save=tmp_path / "c.png")),
        ("loss", lambda: semst.pl.loss(a, save=tmp_path / "l.pdf")),
        ("selection", lambda: semst.pl.domain_selection(a, save=tmp_path / "d.svg")),
    ]:
        assert fn() is None, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "d.svg", "l.pdf", "s.png"]
    # matched: domain '2' is band 'a' and so on: every domain takes its band's colour
    axes = semst.pl.compare(a, "truth", return_ax=True)
    assert "ARI = 1.000" in axes[1].get_title()


# ----------------------------------------------------------------------------------------------------------
# no torch


NO_TORCH = textwrap.dedent(
    """
    import sys, types, pathlib
    import numpy as np, pandas as pd, anndata as ad
    import matplotlib; matplotlib.use("Agg")

    # Load semst_sc.pl and whatever it imports by name, without running the package __init__ files of
    # semst_sc and its other subpackages (those import the torch parts of the package on purpose).
    root = pathlib.Path({src!r}) / "semst_sc"
    for d in [root] + [p for p in root.iterdir() if (p / "__init__.py").exists() and p.name != "pl"]:
        name = "semst_sc" if d == root else "semst_sc." + d.name
        mod = types.ModuleType(name)
        mod.__path__ = [str(d)]
        sys.modules[name] = mod
    import semst_sc.pl as pl

    n = 10
    yy, xx = np.mgrid[0:n, 0:n]
    a = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(n * n)]))
    a.obsm["spatial"] = np.c_[xx.ravel(), yy.ravel()].astype(float)
    band = (yy.ravel() * 2 // n)
    a.obs["truth"] = pd.Categorical(np.array(["a", "b"])[band])
    a.obs["semst_domain"] = pd.Categorical(np.array(["2", "1"])[band])
    a.obsm["X_semst"] = np.eye(2)[band] + 0.01 * np.arange(n * n)[:, None] % 0.1
    a.uns["semst"] = {{"history": {{"loss": np.linspace(2, 1, 5)}},
                      "domain_selection": {{"n_domains": np.arange(2, 5), "score": np.r_[0.5, 0.2, 0.1],
                                           "criterion": "silhouette", "chosen": 2}}}}
    pl.spatial(a); pl.compare(a, "truth"); pl.loss(a); pl.domain_selection(a)
    # pl.embedding's own code runs in test_embedding_*; here the libraries its UMAP loads (its numba
    # compilation would cost another 20 s in this fresh process)
    import scanpy.tools._umap, umap, pynndescent
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("TORCH", loaded[:5])
    print("SEMST", sorted(m for m in sys.modules if m.startswith("semst_sc.")))
    """
)


@pytest.mark.slow
def test_pl_imports_no_torch():
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH.format(src=str(SRC))], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line[:5] in ("TORCH", "SEMST"))
    assert lines["TORCH"] == "[]", f"semst_sc.pl pulled in torch: {lines['TORCH']}"
    # the check is real: the plots did load the package modules they need, and only those
    assert "semst_sc.pl._spatial" in lines["SEMST"] and "semst_sc.tl._metrics" in lines["SEMST"]
    assert "semst_sc.tl._domains" not in lines["SEMST"]


def test_spatial_draws_on_the_tissue_image_when_there_is_one():
    a = _small()
    img = np.full((60, 60, 3), 0.8)
    img[:30] = 0.3  # a two-tone "tissue"
    a.uns["spatial"] = {
        "slice1": {
            "images": {"hires": img},
            "scalefactors": {"tissue_hires_scalef": 5.0, "spot_diameter_fullres": 0.8},
        }
    }
    ax = semst.pl.spatial(a, return_ax=True)
    assert len(ax.images) == 1  # the image is under the spots
    from matplotlib.collections import PatchCollection

    spots = [c for c in ax.collections if isinstance(c, PatchCollection)]
    assert len(spots) >= 1 and len(spots[0].get_paths()) == a.n_obs  # spot circles
    colors = np.array([to_hex(c) for c in spots[0].get_facecolors()])
    np.testing.assert_array_equal(colors, np.array(SEMST_PALETTE[:3])[a.obs[DOMAIN].cat.codes.to_numpy()])
    axes = semst.pl.compare(a, "truth", return_ax=True)
    assert all(len(x.images) == 1 for x in axes)


def test_embedding_refuses_a_bad_show_before_computing_anything(adata):
    plt.close("all")
    before = set(adata.obsm)
    with pytest.raises(TypeError, match="show must be True, False or None"):
        semst.pl.embedding(adata, show=1)
    assert plt.get_fignums() == [] and set(adata.obsm) == before
