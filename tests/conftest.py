from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder with the real annotated datasets (../shared/data beside the repository)."""
    if not (SHARED_DATA / "dlpfc_151673.h5ad").exists():
        pytest.skip(f"real datasets not found at {SHARED_DATA}: clone the repository beside shared/")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _private_embedding_cache(tmp_path_factory):
    """Keep the tests' language-model embeddings out of the user's cache folder."""
    import os

    old = os.environ.get("SEMST_CACHE_DIR")
    os.environ["SEMST_CACHE_DIR"] = str(tmp_path_factory.mktemp("semst-cache"))
    yield
    if old is None:
        os.environ.pop("SEMST_CACHE_DIR", None)
    else:
        os.environ["SEMST_CACHE_DIR"] = old
