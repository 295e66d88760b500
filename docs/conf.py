"""Sphinx configuration of the semst-sc documentation (built with ``sphinx-build -W -b html docs docs/_build/html``)."""

from __future__ import annotations

import os
from datetime import date
from importlib.metadata import version as _version
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

# -- project ------------------------------------------------------------------------------------------------
project = "semst-sc"
author = "semst-sc developers"
copyright = f"{date.today().year}, {author}"
release = _version("semst-sc")
version = ".".join(release.split(".")[:2])

# -- extensions ---------------------------------------------------------------------------------------------
extensions = [
    "myst_nb",  # Markdown pages (MyST) and Jupyter notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # numpy-style docstrings
    "sphinx_autodoc_typehints",  # after napoleon: types from the annotations
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
exclude_patterns = [
    "_build",
    "**.ipynb_checkpoints",
    "Thumbs.db",
    ".DS_Store",
    "make_figures.py",
    "tutorials/README.md",
]
templates_path: list[str] = []

# MyST
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist", "substitution"]
myst_heading_anchors = 3

# Notebooks are committed with their outputs (tutorials/); the docs show them as they are.
nb_execution_mode = "off"
nb_merge_streams = True

# autodoc / napoleon / type hints
autosummary_generate = False
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "comma"
always_document_param_types = False
typehints_document_rtype = False  # the Returns section says what is returned

_UNDERLINE = set("-=~")


def _is_header(lines: list[str], i: int) -> bool:
    return (
        i + 1 < len(lines)
        and lines[i].strip() != ""
        and len(set(lines[i + 1].strip())) == 1
        and set(lines[i + 1].strip()) <= _UNDERLINE
        and len(lines[i + 1].strip()) >= 3
    )


def _free_text_returns(app, what, name, obj, options, lines: list[str]) -> None:
    """Keep a free-text numpy "Returns" section (what is returned, then the slots written) as one block.

    numpydoc's form is "type" lines each followed by an indented description; many Returns sections here
    are prose plus a list of AnnData slots instead. Napoleon would read every prose line as a return
    type; indenting the prose under an empty entry makes it one description, rendered as written.
    """
    for i in range(len(lines) - 1):
        if lines[i].strip().lower() in ("returns", "return") and _is_header(lines, i):
            break
    else:
        return
    start = i + 2
    if start < len(lines) and lines[start].strip() == ":":  # sphinx-autodoc-typehints' marker
        start += 1
    end = start
    while end < len(lines) and not _is_header(lines, end):
        end += 1
    body = lines[start:end]
    text = [j for j, line in enumerate(body) if line.strip()]
    if not text:
        return
    first = text[0]
    numpy_form = first + 1 < len(body) and body[first + 1][:1].isspace() and body[first + 1].strip() != ""
    if numpy_form:
        return
    lines[start:end] = [("    " + line) if line.strip() else "" for line in body]
    if lines[start - 1].strip() != ":":
        lines.insert(start, ":")


# -- tutorials ----------------------------------------------------------------------------------------------
# docs/tutorials is a link to ../tutorials, where the notebooks live (committed with their outputs). The
# tutorials page lists whatever is there; with nothing there yet it says so instead of an empty toctree.
TUTORIALS = Path(__file__).resolve().parent / "tutorials"
_TUTORIAL_SUFFIXES = (".ipynb", ".md")


def _tutorial_docs() -> list[str]:
    if not TUTORIALS.is_dir():
        return []
    return sorted(
        f"tutorials/{p.stem}"
        for p in TUTORIALS.iterdir()
        if p.suffix in _TUTORIAL_SUFFIXES and p.is_file() and p.name != "README.md"
    )


def _fill_tutorials(app, docname, source) -> None:
    if docname != "tutorials":
        return
    docs = _tutorial_docs()
    if docs:
        toc = "```{toctree}\n:maxdepth: 1\n\n" + "\n".join(docs) + "\n```"
    else:
        toc = "*No tutorial notebooks yet.*"
    source[0] = source[0].replace("<!-- tutorial-list -->", toc)


# -- the command line's help, generated from its parser so that it cannot drift ---------------------------
def _cli_help() -> str:
    import argparse

    from semst_sc._cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width
    parser = build_parser()
    blocks = [("semst", parser.format_help())]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            blocks += [(f"semst {name}", sub.format_help()) for name, sub in action.choices.items()]
    return "\n".join(f"## `{title}`\n\n```text\n{text.rstrip()}\n```\n" for title, text in blocks)


def _fill_cli_help(app, docname, source) -> None:
    if docname == "api/cli":
        source[0] = source[0].replace("<!-- semst-help -->", _cli_help())


def setup(app):
    app.connect("source-read", _fill_tutorials)
    app.connect("source-read", _fill_cli_help)
    # after sphinx-autodoc-typehints' own Returns marker (priority 499, connected earlier), before napoleon (500)
    app.connect("autodoc-process-docstring", _free_text_returns, priority=499)


# -- HTML ---------------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"semst-sc {release}"
html_static_path = ["_static"]
html_theme_options = {
    "source_repository": "https://github.com/semst-sc/semst-sc",
    "source_branch": "main",
    "source_directory": "docs/",
}
