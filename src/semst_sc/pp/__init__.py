"""Preprocessing: the method's HVG selection, normalisation and scaling (sparse, never touching ``X``)."""

from __future__ import annotations

from ._preprocess import Preprocessed, preprocess, preprocess_arrays

__all__ = ["Preprocessed", "preprocess", "preprocess_arrays"]
