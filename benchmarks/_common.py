"""Shared bits of the benchmark scripts: datasets, a subprocess runner that measures peak memory, tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEMST_SHARED_DATA", ROOT.parent / "shared" / "data"))

#: name -> (file, truth column, number of domains)
DATASETS = {
    "dlpfc_151673": ("dlpfc_151673.h5ad", "layer_guess_reordered", 7),
    "starmap_mvc": ("starmap_mvc.h5ad", "smoothed_manual", 7),
    "osmfish_sscortex": ("osmfish_sscortex.h5ad", "Region", 11),
}


def load(name: str):
    import anndata as ad

    file, truth, k = DATASETS[name]
    path = SHARED / file
    if not path.exists():
        raise SystemExit(f"{path} not found: set SEMST_SHARED_DATA to the folder with the datasets")
    return ad.read_h5ad(path), truth, k


def pop_truth(adata, key: str):
    """Take the annotation ``obs[key]`` out of ``adata`` before anything reads it: ``(labels, scored)``.

    ``labels`` are the annotated spots' labels as strings, ``scored`` the boolean mask of those spots.
    """
    truth = adata.obs.pop(key)
    scored = truth.notna().to_numpy()
    return truth.astype(str).to_numpy()[scored], scored


def synthetic_tissue(n: int, n_genes: int = 3000):
    """The scaling benchmarks' tissue: ``n`` spots on a square grid (pitch 100) in 5 bands, Poisson counts.

    Counts are drawn in blocks of rows (the same numbers as one draw over the whole matrix), so no dense
    n x genes matrix is ever held. Raw counts in ``X`` (CSR float32), coordinates in ``obsm['spatial']``,
    the band in ``obs['domain']``.
    """
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(n)))
    xy = np.stack(np.divmod(np.arange(n), side), 1).astype(np.float32) * 100.0
    domain = (xy[:, 0] // (side * 100 / 5)).astype(int)
    rates = rng.gamma(0.3, 1.0, size=(5, n_genes)).astype(np.float32)
    blocks = [
        sp.csr_matrix(rng.poisson(rates[domain[a : a + 20_000]] * 0.6).astype(np.float32))
        for a in range(0, n, 20_000)
    ]
    adata = ad.AnnData(sp.vstack(blocks).tocsr(), obsm={"spatial": xy})
    adata.obs["domain"] = domain  # the band each spot's counts were drawn from
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    return adata


def run_json(code: str, timeout: float = 3600, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it must leave its results in a dict named ``res``.

    Peak memory is the child's maximum resident set size, so each measurement starts from a clean process.
    ``env``: the child's environment (default: this process's). A failure returns ``{"error": <last line
    of stderr>}``.
    """
    wrapper = (
        "import json, resource, sys\n"
        + code
        + "\nres['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        + "print(json.dumps(res))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if out.returncode != 0:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_in_tree(src: str, code: str, what: str) -> dict:
    """:func:`run_json` with ``PYTHONPATH`` at the source folder ``src`` (a tree to compare); a failure ends
    the script with ``what`` and the child's error."""
    res = run_json(code, env={**os.environ, "PYTHONPATH": str(Path(src).resolve())})
    if "error" in res:
        raise SystemExit(f"{src} on {what} failed: {res['error']}")
    return res


def tree_arguments(ap, *, before_required: bool, epochs: int) -> None:
    """The options of the scripts that compare source trees: ``--before``, ``--after`` (src folders),
    ``--datasets``, ``--epochs``, ``--rounds``, ``--threads``, ``--out``."""
    before_help = "src folder of the earlier tree (e.g. a git worktree)"
    if before_required:
        ap.add_argument("--before", required=True, help=before_help)
    else:
        ap.add_argument("--before", default=None, help=before_help + "; none: the later tree alone")
    ap.add_argument("--after", default=str(ROOT / "src"), help="src folder of the later tree")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="append the JSON records to this file")


def alternate(trees: dict[str, str], code: str, what: str, rounds: int) -> dict[str, list[dict]]:
    """``code`` run ``rounds`` times in each tree (name -> src folder), the trees in turn within every
    round, each run in a fresh process (:func:`run_in_tree`): ``{name: [result of each round]}``."""
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, src in trees.items():
            runs[name].append(run_in_tree(src, code, what))
    return runs


def table(rows: list[dict], cols: list[str]) -> str:
    """A markdown table of ``rows`` restricted to ``cols`` (floats rounded)."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def mean_std(values) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size > 1 else (f"{v[0]:.3f}" if v.size else "-")


def summarise(rows: list[dict], by: list[str], metrics: tuple[str, ...]) -> list[dict]:
    """Group ``rows`` by the ``by`` columns (in first-seen order): run count and mean ± sd of ``metrics``."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[b] for b in by), []).append(r)
    out = []
    for key, sel in groups.items():
        row = dict(zip(by, key, strict=True))
        row["seeds"] = len(sel)
        for m in metrics:
            row[m] = mean_std(r.get(m) for r in sel)
        out.append(row)
    return out


def append_jsonl(path, rows: list[dict]) -> None:
    """Append ``rows`` to ``path`` as JSON lines (nothing when ``path`` is None)."""
    if path is None:
        return
    with open(path, "a") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
