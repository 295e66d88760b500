"""From top-gene lists to spot vectors: de-duplication, disk cache, encoding, per-gene pooling.

Arrays in, arrays out; the AnnData layer is :func:`semst_sc.tl.semantic_embedding`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scanpy import logging as logg
from scipy import sparse

from ._backend import EncodeStats, TextEncoder, dtype_name
from ._cache import EmbeddingCache, cache_key
from ._prompts import format_prompt, join_genes
from ._ranking import TopGenes


@dataclass
class EmbedResult:
    """Vectors of unique texts and what it cost."""

    vectors: np.ndarray
    n_unique: int = 0
    n_from_cache: int = 0
    n_computed: int = 0
    encode: EncodeStats = field(default_factory=EncodeStats)
    cache_key: str = ""
    seconds: float = 0.0


def cache_payload(encoder: TextEncoder, *, template: str, system_prompt: str, pooling: str, layer) -> dict:
    """Everything that changes a vector besides the gene text (device is left out: CPU and GPU agree to
    float tolerance in float32; the dtype is in)."""
    return {
        "model": encoder.source.fingerprint,
        "template": template,
        "system_prompt": system_prompt,
        "pooling": pooling,
        "layer": "final" if layer is None else int(layer),
        "dtype": dtype_name(encoder.dtype),
        "max_length": encoder.max_length or 0,
    }


def embed_texts(
    encoder: TextEncoder,
    gene_texts: Sequence[str],
    *,
    template: str,
    system_prompt: str,
    pooling: str = "mean",
    layer: int | None = None,
    batch_size: int = 32,
    prefix_cache: bool | None = None,
    cache_dir=None,
    use_cache: bool = True,
    progress: bool = True,
    desc: str = "embedding",
) -> EmbedResult:
    """Vectors of distinct gene-list texts (``"MBP, PLP1, ..."``), through the disk cache.

    Each text is formatted into the template, encoded once, and stored under a key made of the model
    fingerprint, template, system prompt, pooling, layer and dtype; texts already stored are read back.
    """
    t0 = time.perf_counter()
    texts = list(gene_texts)
    payload = cache_payload(
        encoder, template=template, system_prompt=system_prompt, pooling=pooling, layer=layer
    )
    key = cache_key(payload)
    result = EmbedResult(vectors=np.zeros((len(texts), encoder.width), dtype=np.float32), n_unique=len(texts))
    result.cache_key = key
    todo = np.arange(len(texts))
    cache = None
    if use_cache:
        meta = {**payload, "model_name": encoder.source.name, "model_path": encoder.source.path}
        cache = EmbeddingCache(cache_dir, key, meta=meta)
        found, vectors = cache.lookup(texts)
        if vectors is not None:
            result.vectors[found] = vectors
        result.n_from_cache = int(found.sum())
        todo = np.flatnonzero(~found)
    if len(todo):
        prompts = [format_prompt(template, system_prompt, texts[i]) for i in todo]
        vectors, result.encode = encoder.encode(
            prompts,
            pooling=pooling,
            layer=layer,
            batch_size=batch_size,
            prefix_cache=prefix_cache,
            progress=progress,
            desc=desc,
        )
        result.vectors[todo] = vectors
        result.n_computed = len(todo)
        if cache is not None:
            try:
                cache.store([texts[i] for i in todo], vectors)
            except OSError as err:  # a read-only or full disk must not lose the computed vectors
                logg.warning(f"could not write the embedding cache at {cache.folder}: {err}")
    result.seconds = time.perf_counter() - t0
    return result


def gene_list_texts(top: TopGenes, symbols: np.ndarray) -> list[str]:
    """One ``", "``-joined text per spot from its top genes (``"none"`` for a spot without genes)."""
    out = []
    for row, n in zip(top.index, top.n_genes, strict=True):
        out.append(join_genes([symbols[j] for j in row[:n]]))
    return out


def prompt_mode(texts: list[str], embed) -> tuple[np.ndarray, EmbedResult]:
    """Embed every distinct spot text once (``embed`` maps texts to an :class:`EmbedResult`), then spread."""
    codes, uniques = pd.factorize(pd.Series(texts, dtype=object), sort=False)
    result = embed(list(uniques))
    return result.vectors[codes], result


def gene_mode(top: TopGenes, symbols: np.ndarray, embed) -> tuple[np.ndarray, EmbedResult]:
    """Embed each distinct gene symbol once, then average per spot with expression weights.

    The vector of spot *i* is ``sum_j w_ij e_j / sum_j w_ij`` over its top genes *j*, where ``e_j`` is the
    vector of the one-gene prompt of gene *j* and ``w_ij`` the gene's value in the ranking matrix (scaled
    or log-normalised expression; all positive). A spot without any expressed gene gets the vector of the
    prompt with the gene list ``"none"``.
    """
    n_spots = top.index.shape[0]
    valid = top.index >= 0
    gene_symbol = np.where(valid, symbols[np.where(valid, top.index, 0)], None)
    codes, uniques = pd.factorize(pd.Series(gene_symbol[valid], dtype=object), sort=False)
    empty = top.n_genes == 0
    texts = [*list(uniques), join_genes([])] if empty.any() else list(uniques)
    result = embed(texts)
    rows = np.repeat(np.arange(n_spots), valid.sum(1))
    weights = sparse.csr_matrix(
        (top.value[valid].astype(np.float64), (rows, codes)), shape=(n_spots, len(uniques))
    )
    totals = np.asarray(weights.sum(axis=1)).ravel()
    inv = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
    weights = sparse.diags(inv) @ weights
    out = np.asarray(weights @ result.vectors[: len(uniques)].astype(np.float64), dtype=np.float32)
    if empty.any():
        out[empty] = result.vectors[-1]
    return out, result
