"""Prompt templates: the paper's chat prompt for causal models, a plain sentence for encoders.

A template is ordinary text with two placeholders, ``{genes}`` (required: the spot's gene symbols
joined by ``", "`` in descending order) and ``{system}`` (optional: the system sentence). Placeholders
are replaced literally (``str.replace``), so templates may contain other braces.
"""

from __future__ import annotations

from collections.abc import Sequence

GENES = "{genes}"
SYSTEM = "{system}"
GENE_SEPARATOR = ", "

#: Text put in place of the gene list of a spot in which no gene is expressed.
NO_GENES = "none"

#: The paper's system sentence (METHOD.md section 1.3, and the authors' code).
DEFAULT_SYSTEM_PROMPT = (
    "You are an expert in bioinformatics. Represent the biological state of a cell characterized by the "
    "following highly expressed genes. Focus on capturing the functional essence relevant for spatial "
    "domain identification. Output a dense vector representation."
)

#: The paper's prompt for causal (chat) models, in Qwen's ChatML format, ending with the assistant turn.
CHAT_TEMPLATE = (
    "<|im_start|>system\n{system}<|im_end|>\n"
    "<|im_start|>user\nHighly expressed genes: {genes}<|im_end|>\n"
    "<|im_start|>assistant\n"
)

#: Encoders (BERT-style sentence encoders) get a plain sentence; their tokenizer adds [CLS]/[SEP].
ENCODER_TEMPLATE = "Highly expressed genes: {genes}"
ENCODER_TEMPLATE_WITH_SYSTEM = "{system} Highly expressed genes: {genes}"


def resolve_prompt(template: str | None, system_prompt: str | None, *, causal: bool) -> tuple[str, str]:
    """Choose and check the template and the system sentence.

    Parameters
    ----------
    template
        User template, or `None` for the default of the model kind: :data:`CHAT_TEMPLATE` for causal
        models (the paper's prompt), :data:`ENCODER_TEMPLATE` for encoders.
    system_prompt
        System sentence, or `None` for the default of the model kind: the paper's sentence for causal
        models, none for encoders (a long constant sentence dilutes the genes in a mean-pooled sentence
        encoder). ``""`` means no system sentence.
    causal
        Whether the model is a causal (decoder) language model.

    Returns
    -------
    The template and system sentence actually used.
    """
    if template is not None and not isinstance(template, str):
        raise TypeError(
            f"template must be a string with a '{GENES}' placeholder, got {type(template).__name__}"
        )
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise TypeError(
            f"system_prompt must be a string (or None for the default), got {type(system_prompt).__name__}"
        )
    if template is None:
        if system_prompt is None:
            system_prompt = DEFAULT_SYSTEM_PROMPT if causal else ""
        if causal:
            template = CHAT_TEMPLATE
        else:
            template = ENCODER_TEMPLATE_WITH_SYSTEM if system_prompt else ENCODER_TEMPLATE
    else:
        check_template(template)
        if system_prompt is None:
            system_prompt = DEFAULT_SYSTEM_PROMPT if SYSTEM in template else ""
        elif system_prompt and SYSTEM not in template:
            raise ValueError(
                f"system_prompt was given but the template has no '{SYSTEM}' placeholder to put it in; "
                f"add '{SYSTEM}' to the template or leave system_prompt out."
            )
    return template, system_prompt


def check_template(template: str) -> None:
    """Raise a `ValueError` unless ``template`` contains the ``{genes}`` placeholder."""
    if GENES not in template:
        raise ValueError(
            f"template must contain the placeholder '{GENES}' (where the gene symbols go), got {template!r}. "
            f"Example: 'Highly expressed genes: {GENES}'."
        )


def format_prompt(template: str, system_prompt: str, genes: str) -> str:
    """Fill a template with the system sentence and an already joined gene list."""
    return template.replace(SYSTEM, system_prompt).replace(GENES, genes)


def join_genes(symbols: Sequence[str]) -> str:
    """Join gene symbols the way the paper does (``", "``); an empty list gives :data:`NO_GENES`."""
    return GENE_SEPARATOR.join(symbols) if len(symbols) else NO_GENES
