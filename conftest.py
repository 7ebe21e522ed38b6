"""Session-wide test settings for the tests and the doctests of the package.

batchjac's cache (fused kernels, the autotune table) goes to a temporary directory, never the
user's; numba's own ``cache=True`` functions (CPU kernels, colouring, bracketing) use numba's
cache beside their modules, as they do for every user.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("BATCHJAC_CACHE_DIR", str(tmp_path_factory.mktemp("batchjac-cache")))
    yield
    patch.undo()


def pytest_addoption(parser):
    parser.addoption(
        "--fuse-everywhere",
        action="store_true",
        help="run every exact Jacobian whose program is fusable by the fused kernel (fuse='auto' "
        "takes it whatever the planner's estimate; structured results keep the chain): the "
        "exact suite then checks the fused path against the same references as the chain",
    )


_FUSED = {"fused": 0, "chain": 0}


@pytest.fixture(autouse=True)
def _fuse_everywhere(request, monkeypatch):
    if not request.config.getoption("--fuse-everywhere"):
        yield
        return
    from batchjac import engine
    from batchjac.core.errors import NotFusableError

    chain_or_fused = engine._fused_path

    def fused_where_possible(program, inputs, batch, options):
        if options.fuse != "auto" or options.structured or batch == 0 or options.chunk_size is not None:
            return chain_or_fused(program, inputs, batch, options)
        try:
            found = chain_or_fused(program, inputs, batch, engine.replace(options, fuse=True))
        except NotFusableError:
            found = None
        _FUSED["fused" if found is not None else "chain"] += 1
        return found

    monkeypatch.setattr(engine, "_fused_path", fused_where_possible)
    yield


def pytest_terminal_summary(terminalreporter, config):
    if config.getoption("--fuse-everywhere"):
        terminalreporter.write_line(
            f"--fuse-everywhere: {_FUSED['fused']} exact calls ran fused, {_FUSED['chain']} were not fusable"
        )
