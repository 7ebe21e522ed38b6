"""Fused kernels cached in memory and on disk.

A kernel is keyed by the program's structural hash (which ignores constant values, literal
values and the batch size), the differentiated inputs, the mode, the target (``"cpu"`` or
``"cuda"``), the output's dtype, the generator's version and batchjac's. Its module is
written once as ``fused_<key>.py`` under ``batchjac.core.config.cache_dir("kernels")``
(``$BATCHJAC_CACHE_DIR/kernels`` when that is set) and imported from there, so that numba's
``cache=True`` keeps the compiled machine code beside it (``__pycache__``): a new process
that meets the same program imports the module and loads the code without compiling.

The file is written to a temporary name and renamed into place, so processes that race to
write it leave one whole file; an existing file is never rewritten (numba's cache is
invalidated by a newer modification time).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from batchjac.core.config import cache_dir
from batchjac.exact.fuse.codegen import Signature, module_source

# Bump when the generated code changes for the same program: old files are then ignored.
GENERATOR_VERSION = 2

_KERNELS: dict = {}
_LOCK = threading.Lock()


@dataclass
class Kernel:
    """A compiled (or compiling on first call) kernel and how to call it."""

    function: object
    signature: Signature
    path: Path
    statements: int


def kernel_key(program_hash: str, wrt: tuple, mode: str, target: str, dtype: str) -> str:
    from batchjac import __version__

    text = repr((program_hash, wrt, mode, target, dtype, GENERATOR_VERSION, __version__))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def kernel_path(key: str) -> Path:
    return cache_dir("kernels") / f"fused_{key}.py"


def get_kernel(program, wrt, lowered, target: str) -> Kernel:
    """The kernel of ``lowered`` (a :class:`~batchjac.exact.fuse.plan.Lowered`) for ``target``:
    from memory, else from the disk cache, else generated and written there."""
    key = kernel_key(program.hash, tuple(v.index for v in wrt), lowered.mode, target, lowered.tape.dtype.name)
    path = kernel_path(key)
    memory_key = (key, str(path))
    found = _KERNELS.get(memory_key)
    if found is not None:
        return found
    with _LOCK:
        found = _KERNELS.get(memory_key)
        if found is not None:
            return found
        title = f"program {program.hash}, {lowered.mode} mode, {target}"
        generated = module_source(lowered.tape, lowered.analysis, lowered.mode, target, title)
        if not path.exists():
            _write(path, generated.source)
        module = _import(path, f"batchjac_fused_{key}")
        found = Kernel(module.kernel, generated.signature, path, generated.statements)
        _KERNELS[memory_key] = found
        return found


def _write(path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".fused_", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(source)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _import(path: Path, name: str):
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(path):
        return existing
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's cache locates functions through their module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def clear_memory() -> None:
    """Forget the kernels held in memory (the disk cache stays); for tests."""
    _KERNELS.clear()
