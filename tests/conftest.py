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
