"""The Sphinx docs build with warnings as errors, and document every public function."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NAMESPACES = ["pp", "gr", "tl", "pl", "datasets", "nn"]

pytest.importorskip("sphinx", reason="the doc extra is not installed: pip install -e '.[doc]'")
pytest.importorskip("myst_nb", reason="the doc extra is not installed: pip install -e '.[doc]'")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("docs") / "html"
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    return out, proc


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(built):
    _out, proc = built
    warnings = [line for line in proc.stderr.splitlines() if re.search(r"WARNING|ERROR|CRITICAL", line)]
    assert proc.returncode == 0 and not warnings, "\n".join(warnings) or proc.stderr[-3000:]


@pytest.mark.slow
def test_every_public_function_is_documented(built):
    out, proc = built
    assert proc.returncode == 0, proc.stderr[-3000:]
    missing = []
    for ns in NAMESPACES:
        api = (out / "api" / f"{ns}.html").read_text()
        mod = importlib.import_module(f"semst_sc.{ns}")
        names = getattr(mod, "__all__", None)
        assert names, f"semst_sc.{ns} has no __all__: the API page documents what __all__ lists"
        for name in names:
            obj = getattr(mod, name)
            if callable(obj) and f'id="semst_sc.{ns}.{name}"' not in api:
                missing.append(f"semst_sc.{ns}.{name}")
    assert not missing, f"not in the API reference: {missing}"


@pytest.mark.slow
def test_pages_hold_what_they_promise(built):
    out, proc = built
    assert proc.returncode == 0, proc.stderr[-3000:]
    for page in ["index", "installation", "quickstart", "tutorials", "method", "api/index", "changelog"]:
        assert (out / f"{page}.html").exists(), page
    assert (out / "_images" / "method.png").exists()  # the method figure
    changelog = (out / "changelog.html").read_text()
    first_release_heading = next(
        line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")
    )
    assert first_release_heading[3:].strip("[] ").split("]")[0] in changelog
    install = (out / "installation.html").read_text()
    assert "download.pytorch.org/whl/cpu" in install and "CUDA" in install
    cli = (out / "api" / "cli.html").read_text()
    for sub in ("domains", "embed", "evaluate", "plot", "demo"):
        assert f"usage: semst {sub}" in cli, f"the help of `semst {sub}` is not in the CLI page"
    tutorials = (out / "tutorials.html").read_text()
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        assert f"tutorials/{nb.stem}.html" in tutorials, f"{nb.name} is not listed in the tutorials page"


def _documented_params(doc: str) -> set[str] | None:
    """Names listed in the numpy-style Parameters section (``a``, ``a : int``, or ``a, b, c``)."""
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = next(
            i
            for i, line in enumerate(lines[:-1])
            if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}
        )
    except StopIteration:
        return None
    names: set[str] = set()
    for i in range(start + 2, len(lines)):
        line = lines[i]
        if (
            i + 1 < len(lines)
            and line.strip()
            and set(lines[i + 1].strip()) <= set("-=")
            and lines[i + 1].strip()
        ):
            break  # next section
        if line and not line[0].isspace():
            head = line.split(" : ")[0]
            names.update(n.strip().lstrip("*") for n in head.split(","))
    return names


def _public_callables():
    for ns in NAMESPACES:
        mod = importlib.import_module(f"semst_sc.{ns}")
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                yield f"semst_sc.{ns}.{name}", obj


def test_public_functions_have_numpy_docstrings():
    problems = []
    for qualname, fn in _public_callables():
        doc = inspect.getdoc(fn) or ""
        if not doc:
            problems.append(f"{qualname}: no docstring")
            continue
        params = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"
        ]
        documented = _documented_params(doc)
        if params and documented is None:
            problems.append(f"{qualname}: no Parameters section")
        elif params:
            undocumented = [p for p in params if p not in documented]
            if undocumented:
                problems.append(f"{qualname}: parameters not documented: {undocumented}")
        if "Returns\n-------" not in doc:
            problems.append(f"{qualname}: no Returns section")
    assert not problems, "\n".join(problems)
