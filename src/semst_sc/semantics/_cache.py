"""Disk cache of embeddings: one folder per (model, prompt, pooling, dtype) key, one vector per gene list.

Layout::

    <cache_dir>/<key>/meta.json           what the key stands for (human readable)
    <cache_dir>/<key>/part-<id>.npz       texts (JSON list, utf-8 bytes) and vectors (float32, n x width)

Each run adds one part with the vectors it computed; every file is written to a temporary name and then
renamed, so readers never see half a file and concurrent runs do not corrupt each other. When a key has
more than :data:`MAX_PARTS` parts they are merged into one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._constants import LLM_CACHE_ENV

MAX_PARTS = 8
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$SEMST_CACHE_DIR``, else the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) / ``semst-sc``."""
    env = os.environ.get(LLM_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "semst-sc"


def cache_key(payload: dict) -> str:
    """Stable short hash of a JSON-serialisable description of everything that changes the vectors."""
    text = json.dumps({"format": FORMAT_VERSION, **payload}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_save_npz(path: Path, texts: Sequence[str], vectors: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                texts=np.frombuffer(json.dumps(list(texts)).encode("utf-8"), dtype=np.uint8),
                vectors=np.ascontiguousarray(vectors, dtype=np.float32),
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class EmbeddingCache:
    """Vectors of gene-list texts under one key.

    Parameters
    ----------
    root
        The cache folder (:func:`default_cache_dir` when `None`).
    key
        From :func:`cache_key`.
    meta
        Written once to ``meta.json`` so a person can tell what a key folder holds.
    """

    def __init__(self, root: str | os.PathLike | None, key: str, meta: dict | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.key = key
        self.folder = self.root / key
        self._meta = meta or {}

    def _parts(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("part-*.npz"))

    @staticmethod
    def _read(part: Path) -> tuple[list[str], np.ndarray] | None:
        try:
            with np.load(part, allow_pickle=False) as z:
                texts = json.loads(z["texts"].tobytes().decode("utf-8"))
                vectors = np.asarray(z["vectors"], dtype=np.float32)
        except FileNotFoundError:  # merged away by another process meanwhile
            return None
        except (OSError, ValueError, KeyError):  # unreadable part: ignore it, it will be recomputed
            return None
        if len(texts) != len(vectors):
            return None
        return texts, vectors

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Find cached vectors.

        Returns
        -------
        found
            Boolean mask over ``texts``.
        vectors
            ``(found.sum(), width)`` float32 vectors in the order of the found texts, or `None` if none found.
        """
        wanted = {t: i for i, t in enumerate(texts)}
        found = np.zeros(len(texts), dtype=bool)
        rows: dict[int, np.ndarray] = {}
        for part in self._parts():
            read = self._read(part)
            if read is None:
                continue
            part_texts, part_vectors = read
            for j, t in enumerate(part_texts):
                i = wanted.get(t)
                if i is not None and not found[i]:
                    found[i] = True
                    rows[i] = part_vectors[j]
        if not rows:
            return found, None
        order = np.flatnonzero(found)
        return found, np.stack([rows[i] for i in order]).astype(np.float32, copy=False)

    def store(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors (one part file); merge parts when there are too many."""
        if len(texts) == 0:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            meta = {"format": FORMAT_VERSION, "key": self.key, **self._meta}
            _atomic_write_bytes(meta_path, json.dumps(meta, indent=1, sort_keys=True, default=str).encode())
        _atomic_save_npz(self.folder / f"part-{uuid.uuid4().hex}.npz", texts, vectors)
        parts = self._parts()
        if len(parts) > MAX_PARTS:
            self._merge(parts)

    def _merge(self, parts: list[Path]) -> None:
        seen: dict[str, np.ndarray] = {}
        merged: list[Path] = []
        for part in parts:
            read = self._read(part)
            if read is None:
                continue
            merged.append(part)
            for t, v in zip(*read, strict=True):
                seen.setdefault(t, v)
        if not seen:
            return
        texts = list(seen)
        _atomic_save_npz(
            self.folder / f"part-{uuid.uuid4().hex}.npz", texts, np.stack([seen[t] for t in texts])
        )
        for part in merged:
            try:
                part.unlink()
            except FileNotFoundError:
                pass

    def __len__(self) -> int:
        return sum(len(r[0]) for p in self._parts() if (r := self._read(p)) is not None)
