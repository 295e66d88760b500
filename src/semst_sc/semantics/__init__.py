"""Gene semantics: prompts from top genes, language-model encoders, prefix-KV caching, disk cache.

The engine behind :func:`semst_sc.tl.semantic_embedding`. It works on arrays and knows no AnnData; the
heavy dependency (transformers) is imported only when a model is loaded.
"""

from ._backend import (
    BUNDLED_ALIASES,
    EncodeStats,
    ModelSource,
    TextEncoder,
    bundled_model_path,
    clear_model_cache,
    import_transformers,
    load_encoder,
    locate_model,
    resolve_device,
    resolve_dtype,
)
from ._cache import EmbeddingCache, cache_key, default_cache_dir
from ._pipeline import EmbedResult, embed_texts, gene_list_texts, gene_mode, prompt_mode
from ._prompts import (
    CHAT_TEMPLATE,
    DEFAULT_SYSTEM_PROMPT,
    ENCODER_TEMPLATE,
    NO_GENES,
    check_template,
    format_prompt,
    join_genes,
    resolve_prompt,
)
from ._ranking import (
    RankingMatrix,
    TopGenes,
    lognorm_ranking,
    resolve_symbols,
    scaled_hvg_ranking,
    top_genes,
)

__all__ = [
    "BUNDLED_ALIASES",
    "CHAT_TEMPLATE",
    "DEFAULT_SYSTEM_PROMPT",
    "ENCODER_TEMPLATE",
    "NO_GENES",
    "EmbedResult",
    "EmbeddingCache",
    "EncodeStats",
    "ModelSource",
    "RankingMatrix",
    "TextEncoder",
    "TopGenes",
    "bundled_model_path",
    "cache_key",
    "check_template",
    "clear_model_cache",
    "default_cache_dir",
    "embed_texts",
    "format_prompt",
    "gene_list_texts",
    "gene_mode",
    "import_transformers",
    "join_genes",
    "load_encoder",
    "locate_model",
    "lognorm_ranking",
    "prompt_mode",
    "resolve_device",
    "resolve_dtype",
    "resolve_prompt",
    "resolve_symbols",
    "scaled_hvg_ranking",
    "top_genes",
]
