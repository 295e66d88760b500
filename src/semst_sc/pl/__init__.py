"""Plots of semst-sc results (matplotlib, drawn with squidpy and scanpy; this module never imports torch).

Colours of categorical annotations live in ``adata.uns['<key>_colors']``, so scanpy and squidpy plots
of the same AnnData show the same colours.
"""

from __future__ import annotations

from ._embedding import embedding
from ._spatial import compare, spatial
from ._training import domain_selection, loss

__all__ = ["compare", "domain_selection", "embedding", "loss", "spatial"]
