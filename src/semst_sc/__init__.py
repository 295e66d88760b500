"""semst-sc: semantic-guided spatial domains (SemST) for the scverse."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import datasets, gr, pl, pp, tl

try:
    __version__ = version("semst-sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "datasets", "gr", "pl", "pp", "tl"]
