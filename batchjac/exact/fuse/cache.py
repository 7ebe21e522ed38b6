"""Fused kernels cached in memory and on disk.

A kernel is keyed by the program's structural hash (which ignores constant values, literal
values and the batch size), the differentiated inputs, the mode, the target (``"cpu"`` or
``"cuda"``), the output's dtype, and a digest of the generator's sources. Its module is
written once as ``fused_<key>.py`` under ``batchjac.core.config.cache_dir("kernels")``
(``$BATCHJAC_CACHE_DIR/kernels`` when that is set) and imported from there, so that numba's
``cache=True`` keeps the compiled machine code beside it (``__pycache__``): a new process
that meets the same program imports the module and loads the code without compiling.

The file is written to a temporary name and renamed into place, so processes that race to
write it leave one whole file; an existing file is never rewritten (numba's cache is
invalidated by a newer modification time).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from batchjac.core.config import CACHE_ENV, cache_dir
from batchjac.exact.fuse.codegen import Signature, module_source
from batchjac.exact.ir import Program, Var

# Part of every key with the sources' digest: bump it to retire every kernel on disk.
GENERATOR_VERSION = 5

_KERNELS: dict = {}  # (key, path) -> Kernel
_RECENT: dict = {}  # (program key, wrt, mode, target, $BATCHJAC_CACHE_DIR) -> Kernel
_LOCK = threading.Lock()


@dataclass
class Kernel:
    """A compiled (or compiling on first call) kernel and how to call it."""

    function: object
    serial: object | None  # the CPU kernel without threads, for small calls (None on the GPU)
    signature: Signature
    path: Path
    statements: int


def kernel_key(program_hash: str, wrt: tuple, mode: str, target: str, dtype: str) -> str:
    text = repr((program_hash, wrt, mode, target, dtype, GENERATOR_VERSION, _generator_digest()))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@functools.cache
def _generator_digest() -> str:
    """A digest of the sources the generated code comes from (this package, the primitives,
    the element-wise rules, the CUDA names): a kernel written by other code is not reused."""
    root = Path(__file__).resolve().parents[2]
    sources = sorted(
        [
            *root.glob("exact/fuse/*.py"),
            *root.glob("exact/primitives/*.py"),
            root / "core" / "elementwise_rules.py",
        ]
    )
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.read_bytes())
    cuda_names = importlib.util.find_spec("batchjac.kernels.numba_fused")  # located, not imported
    if cuda_names is not None and cuda_names.origin:
        digest.update(Path(cuda_names.origin).read_bytes())
    return digest.hexdigest()[:16]


def kernel_path(key: str) -> Path:
    return cache_dir("kernels") / f"fused_{key}.py"


def get_kernel(program: Program, wrt: Sequence[Var], lowered: Any, target: str) -> Kernel:
    """The kernel of ``lowered`` (a :class:`~batchjac.exact.fuse.plan.Lowered`) for ``target``:
    from memory, else from the disk cache, else generated and written there."""
    # a hit costs a dictionary look-up (no digest, no path): the key holds the cache folder
    # setting, so that another folder is another kernel
    fast_key = (program.key, tuple(v.index for v in wrt), lowered.mode, target, os.environ.get(CACHE_ENV))
    found = _RECENT.get(fast_key)
    if found is not None:
        return found
    key = kernel_key(program.hash, tuple(v.index for v in wrt), lowered.mode, target, lowered.tape.dtype.name)
    path = kernel_path(key)
    memory_key = (key, str(path))
    found = _KERNELS.get(memory_key)
    if found is not None:
        _RECENT[fast_key] = found
        return found
    with _LOCK:
        found = _KERNELS.get(memory_key)
        if found is not None:
            return found
        title = f"program {program.hash}, {lowered.mode} mode, {target}"
        generated = module_source(lowered.tape, lowered.analysis, lowered.mode, target, title, lowered.body)
        if not path.exists():
            _write(path, generated.source)
        module = _import(path, f"batchjac_fused_{key}")
        found = Kernel(
            module.kernel,
            getattr(module, "serial_kernel", None),
            generated.signature,
            path,
            generated.statements,
        )
        _KERNELS[memory_key] = found
        _RECENT[fast_key] = found
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


def _import(path: Path, name: str) -> ModuleType:
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(path):
        return existing
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # a .py path always has a loader
        raise ImportError(f"cannot load the kernel module {path}")
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
    _RECENT.clear()
