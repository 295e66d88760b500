"""The `semst` command, run for real in subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from semst_sc._constants import Key
from semst_sc.tl._metrics import scores

CMD = [sys.executable, "-m", "semst_sc._cli"]
ENV = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    """Language-model embeddings of these tests go to a throwaway cache, not the user's."""
    ENV["SEMST_CACHE_DIR"] = str(tmp_path_factory.mktemp("semst-cache"))


def semst(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)


def semst_many(cases: dict[str, list]) -> dict[str, subprocess.CompletedProcess]:
    """Run several commands at once (each pays the package import; in parallel they cost about one)."""
    procs = {
        name: subprocess.Popen(
            [*CMD, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
        )
        for name, args in cases.items()
    }
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        out[name] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The command failed with exactly one 'semst: error:' line and no traceback; returns that line."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("semst: error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip().endswith(errors[0])
    assert proc.stdout == ""  # no summary table for a failed run
    return errors[0]


def _small(path: Path, *, with_domains: bool = True) -> Path:
    """100 spots on a grid in two bands, 40 genes of Poisson counts; optionally a fake domain column."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:10, 0:10]
    band = (yy.ravel() >= 5).astype(int)
    x = rng.poisson(2.0 + 3.0 * band[:, None] * (np.arange(40) < 20), size=(100, 40)).astype(np.float32)
    a = ad.AnnData(X=x, obs=pd.DataFrame(index=[f"s{i}" for i in range(100)]))
    a.var_names = [f"G{i}" for i in range(40)]
    a.obsm["spatial"] = np.c_[xx.ravel(), yy.ravel()].astype(float) * 100
    a.obs["truth"] = pd.Categorical(np.where(band == 1, "deep", "upper"))
    if with_domains:
        dom = band.copy()
        dom[::7] = 1 - dom[::7]
        a.obs[Key.obs.domain] = pd.Categorical(np.array(["1", "2"])[dom])
    a.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    (d / "fake.h5ad").write_text("this is text, not HDF5\n")
    import h5py

    with h5py.File(d / "other.h5", "w") as f:  # HDF5, but not an AnnData
        f.create_dataset("weights", data=np.arange(10))
    return {
        "dir": d,
        "small": _small(d / "small.h5ad"),
        "bare": _small(d / "bare.h5ad", with_domains=False),
        "fake": d / "fake.h5ad",
        "hdf5": d / "other.h5",
    }


@pytest.fixture(scope="module")
def errors(files) -> dict[str, subprocess.CompletedProcess]:
    d = files["dir"]
    return semst_many(
        {
            "missing": ["domains", d / "nope.h5ad", "-o", d / "o1.h5ad", "--n-domains", "3"],
            "fake": ["evaluate", files["fake"], "--truth", "truth"],
            "hdf5": ["plot", files["hdf5"], "-o", d / "f.png"],
            "truth_key": ["evaluate", files["small"], "--truth", "layer"],
            "pred_key": ["evaluate", files["bare"], "--truth", "truth"],
            "color_key": ["plot", files["small"], "-o", d / "f2.png", "--color", "NOPE"],
            "library_key": ["domains", files["small"], "-o", d / "o4.h5ad", "--library-key", "section"],
            "no_domains": ["plot", files["bare"], "-o", d / "f3.png"],
            "same_file": ["domains", files["small"], "-o", files["small"], "--n-domains", "2"],
            "exists": ["domains", files["bare"], "-o", files["small"], "--n-domains", "2"],
            "bad_value": [
                "domains",
                files["small"],
                "-o",
                d / "o3.h5ad",
                "--n-domains",
                "500",
                "--epochs",
                "1",
            ],
            "bad_suffix": ["domains", files["small"], "-o", d / "out.csv"],
            "bad_hops": ["domains", files["small"], "-o", d / "o5.h5ad", "--smooth-hops", "-1"],
            "bad_ema": ["domains", files["small"], "-o", d / "o6.h5ad", "--ema-decay", "1"],
            "bad_genes": ["domains", files["small"], "-o", d / "o7.h5ad", "--n-top-genes", "0"],
        }
    )


# ----------------------------------------------------------------------------------------------------------
# errors: one line, exit 1, nothing written


def test_missing_file(errors, files):
    line = one_error_line(errors["missing"])
    assert line == f"semst: error: input file not found: {files['dir'] / 'nope.h5ad'}"
    assert not (files["dir"] / "o1.h5ad").exists()


@pytest.mark.parametrize("case", ["fake", "hdf5"])
def test_not_an_h5ad_file(errors, case):
    line = one_error_line(errors[case])
    if case == "hdf5":
        assert "cannot read" in line and "as an AnnData .h5ad file" in line
    else:
        assert "is not an .h5ad file" in line


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("truth_key", ["'layer'", "truth"]),
        ("pred_key", ["'semst_domain'", "semst domains"]),
        ("color_key", ["'NOPE'", "neither a column of adata.obs nor a gene"]),
        ("library_key", ["library_key='section' is not a column of adata.obs", "'truth'"]),
        ("no_domains", ["obs['semst_domain'] not found", "run semst.tl.domains first"]),
    ],
)
def test_missing_key(errors, case, words):
    line = one_error_line(errors[case])
    for w in words:
        assert w in line, line


def test_never_overwrites_the_input(errors, files):
    line = one_error_line(errors["same_file"])
    assert "refusing to overwrite the input file" in line and "--overwrite" in line
    back = ad.read_h5ad(files["small"])  # still the input, untouched
    assert Key.obsm.semst not in back.obsm and Key.uns.semst not in back.uns
    assert "already exists" in one_error_line(errors["exists"])


def test_bad_value_and_output_name(errors, files):
    assert "n_domains must be between 2 and the number of spots (100)" in one_error_line(errors["bad_value"])
    assert not (files["dir"] / "o3.h5ad").exists()
    assert "must end in .h5ad" in one_error_line(errors["bad_suffix"])
    proc = errors["bad_hops"]  # argparse refuses it: usage on stderr, exit 2, nothing written
    assert proc.returncode == 2 and "expected a non-negative integer, got -1" in proc.stderr
    assert not (files["dir"] / "o5.h5ad").exists()
    proc = errors["bad_ema"]
    assert (
        proc.returncode == 2
        and "--ema-decay" in proc.stderr
        and "`ema_decay` must lie in [0, 1)" in proc.stderr
    )
    assert not (files["dir"] / "o6.h5ad").exists()
    proc = errors["bad_genes"]
    assert (
        proc.returncode == 2 and "--n-top-genes" in proc.stderr and "positive integer, got 0" in proc.stderr
    )
    assert not (files["dir"] / "o7.h5ad").exists()


# ----------------------------------------------------------------------------------------------------------
# what works


@pytest.fixture(scope="module")
def light(files) -> dict[str, subprocess.CompletedProcess]:
    d = files["dir"]
    return semst_many(
        {
            "help": ["--help"],
            "version": ["--version"],
            "usage": ["domains", files["small"]],  # no -o
            "evaluate": ["evaluate", files["small"], "--truth", "truth"],
            "plot": ["plot", files["small"], "-o", d / "domains.png", "--dpi", "40"],
            "compare": ["plot", files["small"], "-o", d / "compare.pdf", "--truth", "truth"],
            # the two bands of the small tissue stand in for two slices: one panel each
            "slices": [
                "plot",
                files["small"],
                "-o",
                d / "slices.png",
                "--dpi",
                "40",
                "--library-key",
                "truth",
            ],
        }
    )


def test_help_and_version(light):
    assert light["help"].returncode == 0
    for sub in ("domains", "recluster", "embed", "evaluate", "plot", "demo"):
        assert sub in light["help"].stdout
    assert light["version"].returncode == 0
    assert light["version"].stdout.strip() == f"semst {version('semst-sc')}"
    assert light["usage"].returncode == 2 and "-o/--output" in light["usage"].stderr


def test_evaluate_prints_the_scores(light, files):
    proc = light["evaluate"]
    assert proc.returncode == 0, proc.stderr
    a = ad.read_h5ad(files["small"])
    expected = scores(a.obs["truth"], a.obs[Key.obs.domain])
    table = dict(line.rsplit(None, 1) for line in proc.stdout.splitlines()[3:])
    assert table["ARI"] == f"{expected['ari']:.3f}"
    assert table["NMI"] == f"{expected['nmi']:.3f}"
    assert table["ACC"] == f"{expected['acc']:.3f}"
    assert table["F1 (macro)"] == f"{expected['f1_macro']:.3f}"
    assert table["spots scored"] == "100"
    assert "reading" in proc.stderr  # progress goes to stderr


def test_plot_writes_the_figure(light, files):
    for case, name, magic in [("plot", "domains.png", b"\x89PNG"), ("compare", "compare.pdf", b"%PDF")]:
        proc = light[case]
        assert proc.returncode == 0, proc.stderr
        path = files["dir"] / name
        assert path.read_bytes()[:4] == magic
        assert str(path) in proc.stdout
    assert "compare" in light["compare"].stdout
    assert light["slices"].returncode == 0, light["slices"].stderr
    assert (files["dir"] / "slices.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def dlpfc_crop(tmp_path_factory) -> Path:
    """About 200 spots of the bundled demo slice (real DLPFC counts, coordinates and layers)."""
    import semst_sc as semst

    a = semst.datasets.demo()
    col = a.obs["array_col"].to_numpy()
    sub = a[col < col.min() + 8].copy()
    path = tmp_path_factory.mktemp("dlpfc") / "crop.h5ad"
    sub.write_h5ad(path)
    return path


@pytest.mark.slow
def test_embed_then_domains_end_to_end(dlpfc_crop, tmp_path):
    pytest.importorskip("transformers", reason="the llm extra is not installed")
    llm, out = tmp_path / "llm.h5ad", tmp_path / "out.h5ad"
    before = dlpfc_crop.read_bytes()

    proc = semst("embed", dlpfc_crop, "-o", llm, "--top-k", "5", "--device", "cpu", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    emb = ad.read_h5ad(llm)
    assert emb.obsm[Key.obsm.llm].shape == (emb.n_obs, 384)
    assert emb.uns[Key.uns.llm]["top_k"] == 5
    assert "384-d" in proc.stdout and "minilm" in proc.stdout

    proc = semst(
        "domains", llm, "-o", out, "--n-domains", "4", "--epochs", "3", "--seed", "0", "--device", "cpu",
        "--truth", "layer_guess_reordered", timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert dlpfc_crop.read_bytes() == before  # inputs are untouched
    res = ad.read_h5ad(out)
    assert list(res.obs[Key.obs.domain].cat.categories) == ["1", "2", "3", "4"]
    assert res.obsm[Key.obsm.semst].shape[0] == res.n_obs
    params = res.uns[Key.uns.semst]["params"]
    assert params["n_epochs"] == 3 and params["device"] == "cpu" and params["seed"] == 0
    assert params["fusion"] == "fsm"  # the semantics were used
    # the summary table on stdout, the progress on stderr
    assert "4 in obs['semst_domain']" in proc.stdout
    assert re.search(r"semantics\s+on \(obsm\['X_llm'\], 384-d\)", proc.stdout), proc.stdout
    assert "ARI" in proc.stdout and "agreement with obs['layer_guess_reordered']" in proc.stdout
    counts = res.obs[Key.obs.domain].value_counts()
    for dom, n in counts.items():
        assert any(line.split()[:2] == [dom, str(n)] for line in proc.stdout.splitlines())
    assert "reading" in proc.stderr and "writing" in proc.stderr
    assert "INFO" not in proc.stdout  # library logs stay out of the table

    # --overwrite replaces an existing file, even the input
    proc = semst(
        "domains", out, "-o", out, "--n-domains", "3", "--epochs", "2", "--overwrite", "-q",
        "--smooth-hops", "2", "--cluster-metric", "euclidean", "--ema-decay", "0.9", "--n-top-genes", "300",
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = ad.read_h5ad(out)
    assert list(res.obs[Key.obs.domain].cat.categories) == ["1", "2", "3"]
    assert params["smooth_hops"] == 0 and res.uns[Key.uns.semst]["params"]["smooth_hops"] == 2
    assert (
        params["cluster_metric"] == "cosine"
        and res.uns[Key.uns.semst]["params"]["cluster_metric"] == "euclidean"
    )
    assert re.search(r"cluster metric\s+euclidean", proc.stdout), proc.stdout
    new = res.uns[Key.uns.semst]["params"]
    assert (params["ema_decay"], params["n_top_genes"]) == (0.0, 2000)
    assert (new["ema_decay"], new["n_top_genes"]) == (0.9, 300)


def test_recluster_writes_another_number_of_domains(dlpfc_crop, tmp_path):
    from semst_sc import tl

    trained, out = tmp_path / "trained.h5ad", tmp_path / "k3.h5ad"
    a = ad.read_h5ad(dlpfc_crop)
    tl.domains(a, n_domains=5, n_epochs=3, progress=False)
    a.write_h5ad(trained)
    before = trained.read_bytes()
    proc = semst(
        "recluster", trained, "-o", out, "--n-domains", "3", "--key-added", "k3",
        "--truth", "layer_guess_reordered",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert trained.read_bytes() == before
    res = ad.read_h5ad(out)
    pd.testing.assert_series_equal(res.obs[Key.obs.domain], a.obs[Key.obs.domain])  # the run's stay
    tl.recluster(a, 3, key_added="k3")
    pd.testing.assert_series_equal(res.obs["k3"], a.obs["k3"])  # the command is the function
    assert "3 in obs['k3']" in proc.stdout and "not trained again" in proc.stdout
    assert "agreement with obs['layer_guess_reordered']" in proc.stdout
    # a file that no `semst domains` run wrote: one line saying what to run
    bare = tmp_path / "bare.h5ad"
    ad.read_h5ad(dlpfc_crop).write_h5ad(bare)
    line = one_error_line(semst("recluster", bare, "-o", tmp_path / "x.h5ad", "--n-domains", "3"))
    assert "run `semst domains` on it first" in line and not (tmp_path / "x.h5ad").exists()
    # an annotation column is not written over; the advice is in this command line's terms
    line = one_error_line(
        semst("recluster", trained, "-o", tmp_path / "y.h5ad", "--key-added", "layer_guess_reordered")
    )
    assert "would overwrite adata.obs['layer_guess_reordered']" in line
    assert line.endswith("Pass another --key-added.") and not (tmp_path / "y.h5ad").exists()
    line = one_error_line(semst("plot", trained, "-o", tmp_path / "sel.png", "--kind", "domain_selection"))
    assert "run `semst domains` without --n-domains" in line and "tl.domains(" not in line


@pytest.mark.slow
def test_demo_runs_and_scores():
    demo = pytest.importorskip("semst_sc.datasets").__dict__.get("demo")
    if demo is None:
        pytest.fail("semst_sc.datasets.demo is missing: `semst demo` needs it")
    proc = semst("demo", "--epochs", "3", "--model", "none", "-q", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "agreement with the annotation obs['layer_guess_reordered']" in proc.stdout
    ari = [line for line in proc.stdout.splitlines() if line.startswith("ARI")]
    assert len(ari) == 1 and -1 <= float(ari[0].split()[-1]) <= 1
    assert "7 in obs['semst_domain']" in proc.stdout


@pytest.mark.slow
def test_a_scanpy_style_file_runs_from_its_counts_layer(dlpfc_crop, tmp_path):
    """X log-normalised, raw counts in layers['counts'] (scanpy's usual layout): the error names this
    command line's options, not Python keywords, and --layer runs both the semantics and the domains."""
    pytest.importorskip("transformers", reason="the llm extra is not installed")
    import scanpy as sc

    a = ad.read_h5ad(dlpfc_crop)
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    path = tmp_path / "lognorm.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "out.h5ad"
    runs = semst_many(
        {
            "domains": ["domains", path, "-o", out, "--n-domains", "3", "--epochs", "1"],
            "embed": ["embed", path, "-o", tmp_path / "llm.h5ad"],
            "no_layer": ["domains", path, "-o", out, "--epochs", "1", "--layer", "raw"],
        }
    )
    line = one_error_line(runs["domains"])
    assert "adata.X has non-integer values" in line
    assert "pass --layer NAME if a layer holds them (layers: 'counts')" in line
    assert "pass --no-preprocess" in line and "preprocess=False" not in line
    line = one_error_line(runs["embed"])
    assert "pass --layer NAME" in line and "pass --ranking lognorm" in line and "counts_layer" not in line
    line = one_error_line(runs["no_layer"])
    assert "layer 'raw' not found" in line and "Leave out --layer to use X" in line
    assert not out.exists()

    proc = semst(
        "domains", path, "-o", out, "--layer", "counts", "--model", "minilm", "--n-domains", "3",
        "--epochs", "2", "--device", "cpu", timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = ad.read_h5ad(out)
    assert res.uns[Key.uns.llm]["counts"] == "layers/counts"
    assert res.uns[Key.uns.semst]["params"]["fusion"] == "fsm"
    assert res.obs[Key.obs.domain].nunique() == 3
    np.testing.assert_array_equal(res.X.toarray(), a.X.toarray())  # X written back as it was read
