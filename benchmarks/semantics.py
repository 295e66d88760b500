"""Speed of ``semst.tl.semantic_embedding`` on the DLPFC slice, on this machine's CPU.

Measures

1. the offline default (MiniLM, 384-d) in ``mode="prompt"`` and ``mode="gene"``: spots per second, number of
   unique prompts, and the time of a rerun served by the disk cache;
2. the prefix key/value cache of causal models: a random-weight Qwen3 of moderate size (default 4 layers,
   hidden 512) built here with a byte-level BPE tokenizer, run over the paper's chat prompt with and
   without the prefix cache. It measures the mechanism (how much of every prompt is the shared prefix
   and what skipping it saves), not Qwen3-4B itself, whose tokenizer and size differ.

Usage::

    python benchmarks/semantics.py [--data ../shared/data/dlpfc_151673.h5ad] [--n-spots N] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch

import semst_sc  # noqa: F401 - the package must import
from semst_sc import semantics
from semst_sc._constants import Key
from semst_sc.tl._semantic import semantic_embedding

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dlpfc_151673.h5ad"


def build_causal_model(folder: Path, symbols: list[str], *, layers: int, hidden: int, vocab: int) -> None:
    """Random-weight Qwen3 + a byte-level BPE tokenizer trained on the prompt words and gene symbols."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [
        semantics.format_prompt(
            semantics.CHAT_TEMPLATE, semantics.DEFAULT_SYSTEM_PROMPT, ", ".join(symbols[i::50])
        )
        for i in range(50)
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>"
    )
    cfg = transformers.Qwen3Config(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 128),
        head_dim=64,
        max_position_embeddings=2048,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(0)
    transformers.Qwen3Model(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)


def run(adata, model, **kwargs):
    """Wall and CPU seconds of one call (CPU time is the steadier figure on a shared machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = semantic_embedding(adata, model, copy=True, progress=False, **kwargs)
    return out, (time.perf_counter() - t0, time.process_time() - c0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--n-spots", type=int, default=0, help="first N spots for MiniLM (0: all)")
    parser.add_argument("--causal-spots", type=int, default=200, help="spots for the causal-model comparison")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)"
    )
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each causal variant (best is kept)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    adata = ad.read_h5ad(args.data)
    if args.n_spots:
        adata = adata[: args.n_spots].copy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        # warm-up: model loading is timed apart
        t0 = time.perf_counter()
        semantics.load_encoder(None, device="cpu")
        load_s = time.perf_counter() - t0
        for mode in ("prompt", "gene"):
            out, (wall, cpu) = run(adata, None, mode=mode, top_k=args.top_k, cache_dir=cache)
            info = out.uns[Key.uns.llm]
            again, (rerun, _) = run(adata, None, mode=mode, top_k=args.top_k, cache_dir=cache)
            assert again.uns[Key.uns.llm]["cache_hit"]
            rows.append((f"MiniLM {mode}", adata.n_obs, info, wall, cpu, rerun))

        sub = adata[: args.causal_spots].copy()
        folder = Path(tmp) / "qwen3-random"
        build_causal_model(folder, list(adata.var_names), layers=args.layers, hidden=args.hidden, vocab=8000)
        semantics.load_encoder(str(folder), device="cpu")
        label = f"Qwen3 random {args.layers}x{args.hidden}"
        best = {False: (np.inf, np.inf), True: (np.inf, np.inf)}
        vectors, infos = {}, {}
        # alternate the two variants and keep the best times of each: shared machines are noisy
        for _ in range(args.repeats):
            for flag in (False, True):
                out, (wall, cpu) = run(sub, str(folder), top_k=args.top_k, use_cache=False, prefix_cache=flag)
                best[flag] = (min(best[flag][0], wall), min(best[flag][1], cpu))
                vectors[flag], infos[flag] = out.obsm[Key.obsm.llm], out.uns[Key.uns.llm]
        for flag in (False, True):
            name = f"{label} {'prefix-cached' if flag else 'plain'}"
            rows.append((name, sub.n_obs, infos[flag], *best[flag], float("nan")))
        err = float(np.abs(vectors[True] - vectors[False]).max() / np.abs(vectors[False]).max())

    header = ("run", "spots", "unique prompts", "tokens/prompt", "width", "wall s", "CPU s", "spots/s (wall)",
              "spots/CPU-s", "cached rerun s")  # fmt: skip
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\nCPU ({os.cpu_count()} cores, load average {load:.1f} at the end), {args.threads} torch thread(s); "
        f"MiniLM load {load_s:.1f} s, not included below; causal rows: best of {args.repeats}\n"
    )
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, n, info, wall, cpu, rerun in rows:
        cells = [name, n, info["n_unique_prompts"], info["mean_prompt_tokens"], info["width"], wall, cpu,
                 n / wall, n / cpu, rerun]  # fmt: skip
        print(" | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in cells))
    (_, n, info, plain_wall, plain_cpu, _), (_, _, _, cached_wall, cached_cpu, _) = rows[-2:]
    n_prefix, mean_tokens = infos[True]["prefix_tokens"], info["mean_prompt_tokens"]
    work = n * mean_tokens / (n_prefix + n * (mean_tokens - n_prefix))
    print(
        f"\nprefix cache: {n_prefix} shared tokens of {mean_tokens:.1f} per prompt, so {work:.2f}x fewer tokens "
        "through the model; "
        f"speed-up {plain_wall / cached_wall:.2f}x wall, {plain_cpu / cached_cpu:.2f}x CPU time; max relative "
        f"difference to the plain pass {err:.1e} (random weights: this measures the mechanism, not Qwen3-4B)"
    )


if __name__ == "__main__":
    main()
