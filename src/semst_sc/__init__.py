"""semst-sc: semantic-guided spatial domains (SemST) for the scverse.

Submodules load on first use (``semst.tl``, ``semst.pl``...), so ``import semst_sc`` and the ``semst``
command start fast.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("semst-sc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

_SUBMODULES = ("datasets", "gr", "nn", "pl", "pp", "tl")
__all__ = ["__version__", "datasets", "gr", "nn", "pl", "pp", "tl"]

if TYPE_CHECKING:  # pragma: no cover
    from . import datasets, gr, nn, pl, pp, tl


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'semst_sc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
