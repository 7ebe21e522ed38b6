"""The fused compiler's tests write their kernels to a temporary cache directory."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def kernel_cache_folder(tmp_path_factory):
    """One fresh folder for the session's kernels (never the user's cache)."""
    return tmp_path_factory.mktemp("batchjac-cache")


@pytest.fixture(scope="module", autouse=True)
def kernel_cache(kernel_cache_folder):
    """``$BATCHJAC_CACHE_DIR`` set to the session's folder while this folder's tests run."""
    patch = pytest.MonkeyPatch()
    patch.setenv("BATCHJAC_CACHE_DIR", str(kernel_cache_folder))
    yield kernel_cache_folder
    patch.undo()
