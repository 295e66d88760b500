"""Small shared helpers for working on large sparse matrices without large temporaries."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_PACKAGE_DIR = str(Path(__file__).resolve().parent)

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
