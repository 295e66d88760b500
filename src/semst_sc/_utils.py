"""Small shared helpers: large sparse matrices without large temporaries, and number checks.

Nothing here imports torch, so the command line can use the checks while it parses its arguments.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def import_squidpy():
    """Import squidpy without the two ``SyntaxWarning`` lines its import prints.

    squidpy 1.8's docstrings name parameters (``n_jobs``, ``show_progress_bar``) that ``docrep`` cannot find,
    and ``docrep`` reports each as a ``SyntaxWarning`` at import time, on every fresh interpreter: noise for a
    user, about squidpy's documentation, in the middle of our output. Only those warnings are silenced, and
    only during the import; the user's own filters are restored afterwards.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is not a valid key", category=SyntaxWarning)
        import squidpy

    return squidpy


#: Stored values handled per block by :func:`row_blocks` (temporaries of a block stay at a few tens of MB).
BLOCK_NNZ = 1 << 22


def row_blocks(indptr: np.ndarray, max_nnz: int | None = None) -> Iterator[tuple[int, int, int, int]]:
    """Split the rows of a CSR matrix into consecutive blocks of at most ``max_nnz`` stored values.

    ``max_nnz`` defaults to :data:`BLOCK_NNZ`.
    Yields ``(first_row, end_row, first_value, end_value)``: rows ``first_row:end_row`` own the stored
    values ``data[first_value:end_value]``. A block holds at least one row, so a single row with more
    than ``max_nnz`` values is a block of its own.
    """
    max_nnz = BLOCK_NNZ if max_nnz is None else max_nnz
    n_rows = indptr.size - 1
    a = 0
    while a < n_rows:
        # last row whose end stays within the budget, at least one row
        b = int(np.searchsorted(indptr, indptr[a] + max_nnz, side="right")) - 1
        b = min(max(b, a + 1), n_rows)
        yield a, b, int(indptr[a]), int(indptr[b])
        a = b


def block_rows(indptr: np.ndarray, first_row: int, end_row: int) -> np.ndarray:
    """Row index (relative to ``first_row``) of every stored value of rows ``first_row:end_row``."""
    return np.repeat(np.arange(end_row - first_row), np.diff(indptr[first_row : end_row + 1]))


def user_stacklevel() -> int:
    """``stacklevel`` for :func:`warnings.warn` called here that points at the first caller outside semst_sc.

    Public functions call each other at different depths, so a fixed level would blame the package itself
    for some entry points.
    """
    frame, level = sys._getframe(1), 1  # the function that warns
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


def _unit_interval_number(name: str, value: Any, *, with_zero: bool, with_one: bool, hint: str) -> float:
    """``value`` as a float, or a clear error when it is not a number in the interval from 0 to 1 whose
    ends ``with_zero`` / ``with_one`` say are included; ``hint`` explains an end value in the message."""
    span = f"{'[' if with_zero else '('}0, 1{']' if with_one else ')'}"
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"`{name}` must be a number in {span}, got {value!r}.")
    v = float(value)
    above = 0.0 <= v if with_zero else 0.0 < v
    below = v <= 1.0 if with_one else v < 1.0
    if not (above and below):
        raise ValueError(f"`{name}` must lie in {span} ({hint}), got {value!r}.")
    return v


def check_zinb_fraction(zinb_fraction: Any) -> float:
    """``zinb_fraction`` as a float, or a clear error when it is not a number in (0, 1]."""
    return _unit_interval_number(
        "zinb_fraction", zinb_fraction, with_zero=False, with_one=True, hint="1: every spot at every epoch"
    )


def check_ema_decay(ema_decay: Any) -> float:
    """``ema_decay`` as a float, or a clear error when it is not a number in [0, 1)."""
    return _unit_interval_number(
        "ema_decay", ema_decay, with_zero=True, with_one=False, hint="0: keep the last epoch's weights"
    )
