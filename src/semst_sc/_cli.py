"""The ``semst`` command: spatial domains from a shell.

Examples::

    semst domains slice.h5ad -o slice_domains.h5ad --n-domains 7
    semst recluster slice_domains.h5ad -o slice_k5.h5ad --n-domains 5
    semst embed slice.h5ad -o slice_llm.h5ad --model minilm
    semst evaluate slice_domains.h5ad --truth layer_guess_reordered
    semst plot slice_domains.h5ad -o domains.png
    semst demo

Progress goes to stderr, the summary table to stdout. Errors in the input (a missing file, a file that is
not an .h5ad, a missing key, a bad value) end the command with one line ``semst: error: ...`` and exit
status 1; nothing is ever written over the input file unless ``--overwrite`` is given.

The heavy libraries (scanpy, torch, ...) are imported inside the subcommands, so ``semst --help`` is quick.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._constants import CLUSTER_METHODS, CLUSTER_METRICS, FUSIONS, LLM_RANKINGS, Default, Key

PROG = "semst"
DEMO_N_DOMAINS = 7
_FIGURE_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".tif", ".tiff", ".eps", ".ps")
_PLOT_KINDS = ("spatial", "compare", "loss", "embedding", "domain_selection")


class CLIError(Exception):
    """A problem with the command line or the files it names: reported as one line, no traceback."""


# ----------------------------------------------------------------------------------------------------------
# small helpers


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("semst-sc")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        return "0.0.0+unknown"


def _say(msg: str) -> None:
    """Progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%"))
    except ValueError:
        return False
    return True


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """Plain aligned text table: numbers right-aligned, text left-aligned."""
    cells = [[str(c) for c in r] for r in rows]
    if header is not None:
        cells.insert(0, [str(h) for h in header])
    if not cells:
        return ""
    ncol = max(len(r) for r in cells)
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(ncol)]
    body = cells[1:] if header is not None else cells
    numeric = [all(_is_number(r[i]) for r in body if i < len(r)) for i in range(ncol)]
    lines = []
    for n, r in enumerate(cells):
        parts = [c.rjust(widths[i]) if numeric[i] and i > 0 else c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(parts).rstrip())
        if header is not None and n == 0:
            lines.append("  ".join("-" * w for w in widths[: len(r)]))
    return "\n".join(lines)


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _quiet_libraries() -> None:
    """Keep the libraries' deprecation chatter out of the progress stream."""
    for cat in (FutureWarning, DeprecationWarning, SyntaxWarning):
        warnings.filterwarnings("ignore", category=cat)
    warnings.filterwarnings("ignore", message=".*is_categorical_dtype.*")


def _setup_logging(quiet: bool) -> None:
    import scanpy as sc

    sc.settings.verbosity = 1 if quiet else 2  # warnings only / info
    sc.settings.logfile = sys.stderr
    # the library's warnings suggest Python keywords: show this command line's options instead
    for handler in getattr(getattr(sc.settings, "_root_logger", None), "handlers", []):
        handler.addFilter(_CliTermsFilter())


class _CliTermsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _in_cli_terms(record.msg)
        return True


def _logs_to_stderr(quiet: bool) -> None:
    """spatialdata (imported by squidpy) logs to stdout through rich; send it to stderr with the rest."""
    import logging

    try:
        import spatialdata._logging  # noqa: F401 - sets its handler up on import
    except ImportError:  # pragma: no cover - squidpy without spatialdata
        return
    logger = logging.getLogger("spatialdata._logging")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def _input_path(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CLIError(f"input file not found: {path}")
    if p.is_dir():
        raise CLIError(f"{path} is a folder, not an .h5ad file")
    return p


def _read(path: str):
    """Read an .h5ad file fully into memory, with one-line errors for what is not one."""
    p = _input_path(path)
    import h5py

    if not h5py.is_hdf5(p):
        raise CLIError(
            f"{path} is not an .h5ad file (it is not HDF5); convert it to AnnData .h5ad first, "
            "e.g. with scanpy.read_10x_h5 / scanpy.read_csv and adata.write_h5ad"
        )
    import anndata as ad

    _say(f"reading {path}")
    try:
        adata = ad.read_h5ad(p)
    except Exception as err:  # h5py / anndata raise many kinds for a damaged or foreign HDF5 file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CLIError(f"cannot read {path} as an AnnData .h5ad file: {first}") from err
    _say(f"    {adata.n_obs} spots x {adata.n_vars} genes")
    return adata


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _check_output(
    out: str | None, inputs: Sequence[str], *, overwrite: bool, suffixes: Sequence[str]
) -> Path:
    """Refuse an output path that would replace the input (or any existing file) without --overwrite."""
    if out is None:
        raise CLIError("no output file given: pass -o OUT")
    o = Path(out)
    if o.suffix.lower() not in suffixes:
        raise CLIError(f"output {out} must end in {' or '.join(suffixes)}")
    if o.is_dir():
        raise CLIError(f"output {out} is a folder; give a file name")
    for inp in inputs:
        if _same_file(o, Path(inp)) and not overwrite:
            raise CLIError(
                f"refusing to overwrite the input file {inp}; choose another -o or pass --overwrite"
            )
    if o.exists() and not overwrite and suffixes == (".h5ad",):
        raise CLIError(f"output {out} already exists; choose another -o or pass --overwrite to replace it")
    if not o.parent.exists():
        raise CLIError(f"output folder {o.parent} does not exist")
    return o


def _write(adata, out: Path) -> None:
    """Write next to the target, then move into place: the old file stays whole if writing fails."""
    _say(f"writing {out}")
    fd, tmp = tempfile.mkstemp(suffix=".h5ad", prefix=f".{out.stem}.", dir=out.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_obs_key(adata, key: str, what: str) -> None:
    if key not in adata.obs:
        cols = ", ".join(map(str, adata.obs.columns[:12])) + (", ..." if adata.obs.shape[1] > 12 else "")
        hint = " (run `semst domains` first)" if key == Key.obs.domain else ""
        raise CLIError(f"{what} {key!r} is not a column of obs{hint}; obs has: {cols or 'no columns'}")


def _domain_rows(adata, key: str) -> list[list[Any]]:
    counts = adata.obs[key].value_counts(sort=False)
    n = int(counts.sum())
    return [[str(cat), int(c), f"{100 * c / max(n, 1):.1f}%"] for cat, c in counts.items()]


def _run_summary(adata, *, inp: str, out: str | None) -> str:
    rec = adata.uns.get(Key.uns.semst, {})
    params = rec.get("params", {})
    hist = rec.get("history", {})
    rows: list[list[Any]] = [["input", f"{inp} ({adata.n_obs} spots x {adata.n_vars} genes)"]]
    if out is not None:
        rows.append(["output", out])
    dom = rec.get("domain_key", Key.obs.domain)
    n_dom = adata.obs[dom].cat.categories.size if dom in adata.obs else "?"
    est = " (estimated)" if params.get("estimated_n_domains") else ""
    rows.append(["domains", f"{n_dom}{est} in obs[{dom!r}]"])
    rows.append(["embedding", f"obsm[{rec.get('embedding_key', Key.obsm.semst)!r}]"])
    llm_key = params.get("llm_key", Key.obsm.llm)
    if llm_key in adata.obsm:
        sem = f"on (obsm[{llm_key!r}], {adata.obsm[llm_key].shape[1]}-d)"
    else:
        sem = "off (no language-model embedding)"
    rows.append(["semantics", sem])
    for name in ("fusion", "cluster_method", "cluster_metric", "n_epochs", "seed", "device"):
        if name in params:
            rows.append([name.replace("_", " "), params[name]])
    if "loss" in hist and len(hist["loss"]):
        rows.append(["final loss", _fmt(float(hist["loss"][-1]), 4)])
    if "runtime_s" in rec:
        rows.append(["runtime", f"{float(rec['runtime_s']):.1f} s"])
    text = _table(rows)
    if dom in adata.obs:
        text += "\n\n" + _table(_domain_rows(adata, dom), header=["domain", "spots", "share"])
    return text


_METRIC_NAMES = {
    "ari": "ARI",
    "nmi": "NMI",
    "acc": "ACC",
    "f1_macro": "F1 (macro)",
    "f1": "F1 (macro)",
    "n_scored": "spots scored",
    "n_unlabelled": "spots without a label",
}


def _evaluation_table(res: dict) -> str:
    rows = [[_METRIC_NAMES.get(k, k), _fmt(v)] for k, v in res.items() if isinstance(v, int | float)]
    return _table(rows, header=["metric", "value"])


# ----------------------------------------------------------------------------------------------------------
# subcommands


def _cmd_domains(args: argparse.Namespace) -> int:
    out = _check_output(args.output, [args.input], overwrite=args.overwrite, suffixes=(".h5ad",))
    adata = _read(args.input)
    if args.truth is not None:
        _check_obs_key(adata, args.truth, "--truth")
    _logs_to_stderr(args.quiet)
    import semst_sc as semst

    _say(f"semst domains: n_domains={args.n_domains if args.n_domains else 'estimated'}")
    semst.tl.domains(
        adata,
        n_domains=args.n_domains,
        n_epochs=args.epochs,
        ema_decay=args.ema_decay,
        n_top_genes=args.n_top_genes,
        fusion=args.fusion,
        cluster_method=args.cluster_method,
        cluster_metric=args.cluster_metric,
        library_key=args.library_key,
        smooth_hops=args.smooth_hops,
        layer=args.layer,
        preprocess=not args.no_preprocess,
        model=args.model,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    if args.truth is not None:
        res = semst.tl.evaluate(adata, args.truth, Key.obs.domain)
    _write(adata, out)
    print(_run_summary(adata, inp=args.input, out=str(out)))
    if args.truth is not None:
        print(f"\nagreement with obs[{args.truth!r}]\n" + _evaluation_table(res))
    return 0


def _cmd_recluster(args: argparse.Namespace) -> int:
    out = _check_output(args.output, [args.input], overwrite=args.overwrite, suffixes=(".h5ad",))
    adata = _read(args.input)
    if Key.uns.semst not in adata.uns:
        raise CLIError(
            f"{args.input} holds no trained run (uns[{Key.uns.semst!r}]): run `semst domains` on it first"
        )
    if args.truth is not None:
        _check_obs_key(adata, args.truth, "--truth")
    _logs_to_stderr(args.quiet)
    import semst_sc as semst

    start = time.perf_counter()
    semst.tl.recluster(
        adata,
        n_domains=args.n_domains,
        key_added=args.key_added,
        cluster_method=args.cluster_method,
        cluster_metric=args.cluster_metric,
        smooth_hops=args.smooth_hops,
        seed=args.seed,
    )
    elapsed = time.perf_counter() - start
    run = adata.uns[Key.uns.semst]
    key = args.key_added or str(run.get("domain_key", Key.obs.domain))
    if args.truth is not None:
        res = semst.tl.evaluate(adata, args.truth, key)
    _write(adata, out)
    est = " (estimated)" if args.n_domains is None else ""
    rows = [
        ["input", f"{args.input} ({adata.n_obs} spots x {adata.n_vars} genes)"],
        ["output", str(out)],
        ["domains", f"{adata.obs[key].cat.categories.size}{est} in obs[{key!r}]"],
        ["embedding", f"obsm[{run.get('embedding_key', Key.obsm.semst)!r}] (not trained again)"],
        ["runtime", f"{elapsed:.1f} s"],
    ]
    print(_table(rows) + "\n\n" + _table(_domain_rows(adata, key), header=["domain", "spots", "share"]))
    if args.truth is not None:
        print(f"\nagreement with obs[{args.truth!r}]\n" + _evaluation_table(res))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    out = _check_output(args.output, [args.input], overwrite=args.overwrite, suffixes=(".h5ad",))
    adata = _read(args.input)
    import semst_sc as semst

    start = time.perf_counter()
    kwargs: dict[str, Any] = {"device": args.device, "progress": not args.quiet}
    if args.top_k is not None:
        kwargs["top_k"] = args.top_k
    if args.gene_symbols is not None:
        kwargs["gene_symbols"] = args.gene_symbols
    kwargs.update(counts_layer=args.layer, ranking=args.ranking)
    semst.tl.semantic_embedding(adata, model=args.model, **kwargs)
    elapsed = time.perf_counter() - start
    _write(adata, out)
    emb = adata.obsm[Key.obsm.llm]
    rec = adata.uns.get(Key.uns.llm, {})
    rows = [
        ["input", f"{args.input} ({adata.n_obs} spots x {adata.n_vars} genes)"],
        ["output", str(out)],
        ["embedding", f"obsm[{Key.obsm.llm!r}], {emb.shape[1]}-d"],
        ["model", f"{rec.get('model', args.model or 'bundled default')} ({rec.get('model_origin', '?')})"],
    ]
    for name, label in (
        ("top_k", "top genes"),
        ("device", "device"),
        ("n_unique_prompts", "distinct prompts"),
        ("n_from_cache", "from the disk cache"),
    ):
        if name in rec:
            rows.append([label, rec[name]])
    rows.append(["runtime", f"{elapsed:.1f} s"])
    print(_table(rows))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    adata = _read(args.input)
    _check_obs_key(adata, args.truth, "--truth")
    _check_obs_key(adata, args.pred, "--pred")
    import semst_sc as semst

    res = semst.tl.evaluate(adata, args.truth, args.pred)
    print(f"obs[{args.pred!r}] against obs[{args.truth!r}] in {args.input}\n" + _evaluation_table(res))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    out = _check_output(args.output, [args.input], overwrite=args.overwrite, suffixes=_FIGURE_FORMATS)
    adata = _read(args.input)
    _logs_to_stderr(args.quiet)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import semst_sc as semst

    colors = args.color or [Key.obs.domain]
    kind = args.kind
    if kind == "spatial" and args.truth is not None:
        kind = "compare"
    with plt.rc_context({"figure.dpi": args.dpi, "savefig.dpi": args.dpi}):
        if kind == "spatial":
            semst.pl.spatial(adata, color=colors, library_key=args.library_key)
        elif kind == "compare":
            if args.truth is None:
                raise CLIError("--kind compare needs --truth KEY (the annotation column)")
            semst.pl.compare(adata, args.truth, colors[0])
        elif kind == "loss":
            semst.pl.loss(adata)
        elif kind == "embedding":
            semst.pl.embedding(adata, color=colors, truth_key=args.truth)
        else:
            semst.pl.domain_selection(adata)
        fig = plt.gcf()
        fig.savefig(out, bbox_inches="tight")
    plt.close("all")
    _say(f"wrote {out}")
    print(_table([["input", args.input], ["figure", str(out)], ["kind", kind]]))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    _logs_to_stderr(args.quiet)
    out = None
    if args.output is not None:
        out = _check_output(args.output, [], overwrite=args.overwrite, suffixes=(".h5ad",))
    import semst_sc as semst
    from semst_sc.datasets import DEMO_ANNOTATION

    _say("loading the bundled demo (semst.datasets.demo)")
    adata = semst.datasets.demo()
    _say(f"    {adata.n_obs} spots x {adata.n_vars} genes")
    model = None if args.model in (None, "none") else args.model
    semst.tl.domains(
        adata,
        n_domains=DEMO_N_DOMAINS,
        n_epochs=args.epochs,
        ema_decay=args.ema_decay,
        n_top_genes=args.n_top_genes,
        model=model,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    res = semst.tl.evaluate(adata, DEMO_ANNOTATION, Key.obs.domain)
    if out is not None:
        _write(adata, out)
    print(_run_summary(adata, inp="semst.datasets.demo()", out=None if out is None else str(out)))
    print(f"\nagreement with the annotation obs[{DEMO_ANNOTATION!r}]\n" + _evaluation_table(res))
    return 0


# ----------------------------------------------------------------------------------------------------------
# parser


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1, "positive")


def _nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0, "non-negative")


def _ema_decay(text: str) -> float:
    from ._utils import check_ema_decay  # the bound of tl.domains, without importing torch

    try:
        value: float | str = float(text)
    except ValueError:
        value = text  # not a number: the check refuses it, naming the range
    try:
        return check_ema_decay(value)
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final table")
    p.add_argument("--traceback", action="store_true", help="show the full traceback of an error")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="'cpu', 'cuda', 'cuda:1', ... (default: CUDA if available)")
    p.add_argument("--seed", type=int, default=Default.seed, help="random seed (default: %(default)s)")
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=Default.n_epochs,
        help="training epochs (default: %(default)s)",
    )
    p.add_argument(
        "--ema-decay",
        type=_ema_decay,
        default=Default.ema_decay,
        metavar="D",
        help="end training on an average of the weights over about the last 1/(1-D) epochs instead of the "
        "last epoch's weights; 0.99 narrowed the seed-to-seed spread in the benchmarks (default: %(default)s, off)",
    )
    p.add_argument(
        "--n-top-genes",
        type=_positive_int,
        default=Default.n_top_genes,
        metavar="N",
        help="highly variable genes the network reads (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="SemST spatial domains (semantic-guided dual GCN) on AnnData .h5ad files.",
        epilog="Run `semst COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "domains",
        help="find spatial domains (semst.tl.domains) and write them to a new .h5ad",
        description="Train SemST on IN (raw counts in X, coordinates in obsm['spatial']) and write "
        f"obs[{Key.obs.domain!r}], obsm[{Key.obsm.semst!r}] and uns[{Key.uns.semst!r}] to OUT.",
    )
    p.add_argument("input", metavar="IN.h5ad")
    p.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    p.add_argument(
        "--n-domains", type=_positive_int, default=None, help="number of domains (default: estimated)"
    )
    p.add_argument(
        "--model",
        default=None,
        help=f"language model for the gene semantics when obsm[{Key.obsm.llm!r}] is absent: 'minilm' "
        "(bundled), a hub name or a local folder (default: use obsm['X_llm'] if present, else none)",
    )
    p.add_argument(
        "--fusion", choices=FUSIONS, default="fsm", help="fusion of semantics (default: %(default)s)"
    )
    p.add_argument(
        "--cluster-method", choices=CLUSTER_METHODS, default="gmm", help="clustering (default: %(default)s)"
    )
    p.add_argument(
        "--cluster-metric",
        choices=CLUSTER_METRICS,
        default=Default.cluster_metric,
        help="cluster the embedding with each spot's row scaled to unit length (cosine) or as learned "
        "(euclidean) (default: %(default)s)",
    )
    p.add_argument(
        "--library-key",
        metavar="KEY",
        default=None,
        help="obs column naming each spot's slice, when IN holds several slices (no spatial edge between them)",
    )
    p.add_argument(
        "--smooth-hops",
        type=_nonnegative_int,
        default=Default.smooth_hops,
        metavar="N",
        help="average the embedding over each spot's spatial neighbours N times before clustering; 2 suits "
        "small imaging panels (osmFISH), 0 Visium spots (default: %(default)s)",
    )
    p.add_argument(
        "--layer",
        metavar="NAME",
        default=None,
        help="read the raw counts from IN's layers[NAME] instead of X (e.g. 'counts', when X is normalised)",
    )
    p.add_argument(
        "--no-preprocess",
        action="store_true",
        help="the matrix (X or --layer) is already normalised and non-negative: use it as it is, every gene, "
        "instead of running the method's preprocessing on raw counts",
    )
    p.add_argument("--truth", metavar="KEY", default=None, help="obs column to evaluate the domains against")
    _add_run_options(p)
    p.add_argument("--overwrite", action="store_true", help="allow OUT to replace an existing file (even IN)")
    _add_common(p)
    p.set_defaults(func=_cmd_domains)

    p = sub.add_parser(
        "recluster",
        help="cluster the trained embedding again into another number of domains (semst.tl.recluster)",
        description="Rerun only the clustering step of `semst domains` on IN's trained embedding "
        f"(obsm[{Key.obsm.semst!r}]), with the run's settings unless given, and write OUT. Seconds: no "
        "training.",
    )
    p.add_argument("input", metavar="IN.h5ad", help="the output of `semst domains`")
    p.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    p.add_argument(
        "--n-domains", type=_positive_int, default=None, help="number of domains (default: estimated)"
    )
    p.add_argument(
        "--key-added",
        metavar="KEY",
        default=None,
        help=f"obs column to write (default: the run's own, obs[{Key.obs.domain!r}], which is replaced)",
    )
    p.add_argument("--cluster-method", choices=CLUSTER_METHODS, default=None, help="default: the run's")
    p.add_argument("--cluster-metric", choices=CLUSTER_METRICS, default=None, help="default: the run's")
    p.add_argument(
        "--smooth-hops", type=_nonnegative_int, default=None, metavar="N", help="default: the run's"
    )
    p.add_argument("--seed", type=int, default=None, help="clustering seed (default: the run's)")
    p.add_argument("--truth", metavar="KEY", default=None, help="obs column to evaluate the domains against")
    p.add_argument("--overwrite", action="store_true", help="allow OUT to replace an existing file (even IN)")
    _add_common(p)
    p.set_defaults(func=_cmd_recluster)

    p = sub.add_parser(
        "embed",
        help="language-model embedding of each spot's top genes (semst.tl.semantic_embedding)",
        description=f"Write obsm[{Key.obsm.llm!r}] and uns[{Key.uns.llm!r}] to OUT.",
    )
    p.add_argument("input", metavar="IN.h5ad")
    p.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    p.add_argument("--model", default=None, help="hub name or local folder (default: the bundled MiniLM)")
    p.add_argument("--top-k", type=_positive_int, default=None, help="top genes per spot in the prompt")
    p.add_argument(
        "--layer",
        metavar="NAME",
        default=None,
        help="rank the genes on the raw counts in IN's layers[NAME] instead of X (e.g. 'counts')",
    )
    p.add_argument(
        "--ranking",
        choices=LLM_RANKINGS,
        default="scaled",
        help="how genes are ranked within a spot: the paper's scaled highly variable genes, on raw counts, or "
        "log-normalised values of every gene, for a matrix that is already normalised (default: %(default)s)",
    )
    p.add_argument(
        "--gene-symbols",
        metavar="COLUMN",
        default=None,
        help="var column with the gene symbols, when var_names are not symbols (default: var_names, or a "
        "symbol column found by name when var_names are Ensembl ids)",
    )
    p.add_argument("--device", default=None, help="'cpu', 'cuda', ... (default: CUDA if available)")
    p.add_argument("--overwrite", action="store_true", help="allow OUT to replace an existing file (even IN)")
    _add_common(p)
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser(
        "evaluate",
        help="ARI / NMI / ACC / F1 of domains against an annotation",
        description="Score obs[PRED] against obs[TRUTH] (spots without a truth label are left out).",
    )
    p.add_argument("input", metavar="IN.h5ad")
    p.add_argument("--truth", metavar="KEY", required=True, help="obs column with the reference annotation")
    p.add_argument("--pred", metavar="KEY", default=Key.obs.domain, help="obs column (default: %(default)s)")
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "plot",
        help="draw domains on the tissue (or the other semst.pl plots) into an image file",
        description="Draw a figure of IN with semst.pl and write it to FIG (png, pdf, svg, ...).",
    )
    p.add_argument("input", metavar="IN.h5ad")
    p.add_argument("-o", "--output", metavar="FIG.png", required=True)
    p.add_argument(
        "--color",
        metavar="KEY",
        nargs="+",
        default=None,
        help=f"obs key(s) or genes (default: {Key.obs.domain})",
    )
    p.add_argument("--truth", metavar="KEY", default=None, help="annotation column: draws truth vs domains")
    p.add_argument("--kind", choices=_PLOT_KINDS, default="spatial", help="which plot (default: %(default)s)")
    p.add_argument(
        "--library-key",
        metavar="KEY",
        default=None,
        help="obs column naming each spot's slice: one panel per slice (--kind spatial)",
    )
    p.add_argument("--dpi", type=_positive_int, default=150, help="resolution (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="allow FIG to be the input path")
    _add_common(p)
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser(
        "demo",
        help="run the main job on the bundled demo slice and print the evaluation",
        description=f"Domains (n_domains={DEMO_N_DOMAINS}) on semst.datasets.demo(), a DLPFC Visium slice, "
        "scored against its expert layer annotation.",
    )
    p.add_argument("-o", "--output", metavar="OUT.h5ad", default=None, help="also write the result here")
    p.add_argument(
        "--model",
        default="minilm",
        help="language model for the semantics: 'minilm' (bundled, default), a hub name, a folder, or 'none'",
    )
    _add_run_options(p)
    p.add_argument("--overwrite", action="store_true", help="allow OUT to replace an existing file")
    _add_common(p)
    p.set_defaults(func=_cmd_demo)
    return parser


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and err.args and isinstance(err.args[0], str):
        text = err.args[0]
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())  # one line


#: The Python keywords that error messages of the library suggest, as the options of this command line.
_CLI_TERMS = (
    ("pass layer=<name> if a layer holds them", "pass --layer NAME if a layer holds them"),
    ("pass counts_layer=<name> if a layer holds them", "pass --layer NAME if a layer holds them"),
    ("pass layer='counts' (the layer's name)", "pass --layer NAME (the layer's name)"),
    ("pass counts_layer='counts' (the layer's name)", "pass --layer NAME (the layer's name)"),
    ("pass ranking='lognorm'", "pass --ranking lognorm"),
    ("Pass counts_layer=None to use adata.X", "Leave out --layer to use X"),
    ("pass counts_layer=None to use adata.X", "leave out --layer to use X"),
    ("pass preprocess=False to semst.tl.domains", "pass --no-preprocess"),
    ("pass gene_symbols='<column>'", "pass --gene-symbols COLUMN"),
    ("pass gene_symbols= with", "pass --gene-symbols with"),
    ("Pass layer=None to use adata.X", "Leave out --layer to use X"),
    (
        "Run semst.tl.semantic_embedding(adata) first, or pass model=... to semst.tl.domains",
        "Run `semst embed` on IN first, or pass --model (e.g. --model minilm)",
    ),
)


#: The same for advice that names a key of the AnnData: (regular expression, replacement).
_CLI_PATTERNS = (
    (
        r"Pass another key_added=, or remove it first \(`del adata\.obs\['[^']*'\]`\) if it is to be replaced\.",
        "Pass another --key-added.",
    ),
    (r"run semst\.tl\.domains\(adata, n_domains=None\) first", "run `semst domains` without --n-domains"),
)


def _in_cli_terms(text: str) -> str:
    for python, cli in _CLI_TERMS:
        text = text.replace(python, cli)
    for pattern, cli in _CLI_PATTERNS:
        text = re.sub(pattern, cli, text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``semst`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _quiet_libraries()
    try:
        _setup_logging(args.quiet)
        return int(args.func(args) or 0)
    except (
        CLIError,
        KeyError,
        ValueError,
        TypeError,
        ImportError,
        OSError,
        RuntimeError,
        ArithmeticError,
    ) as err:
        if args.traceback:
            raise
        print(f"{PROG}: error: {_in_cli_terms(_message(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
