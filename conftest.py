"""Session-wide test settings for the tests and the doctests of the package.

Compiled kernels and the autotune table go to a temporary cache directory, never the user's.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("BATCHJAC_CACHE_DIR", str(tmp_path_factory.mktemp("batchjac-cache")))
    yield
    patch.undo()
