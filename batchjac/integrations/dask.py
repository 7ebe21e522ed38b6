"""Batched Jacobians of Dask arrays, blockwise over the batch axis (issue 9).

``bj.jacobian``, ``bj.value_and_jacobian`` and ``bj.check_jacobian`` hand a call over to this
module when one of its arrays is a Dask array; Dask itself is imported only then, so it stays
an optional dependency (``pip install 'batchjac[dask]'``).

Blocks. Samples are independent, so the Jacobian of a batch is the Jacobians of its blocks
of samples stacked along axis 0. Every Dask argument is rechunked to one chunk in its
non-batch axes (a :class:`RechunkWarning` says so when that moves more than
``RECHUNK_WARNING_BYTES``), the differentiated ones and the other Dask arguments to the batch
chunks of the first differentiated Dask argument. Each block of samples then goes through
the in-memory ``bj.value_and_jacobian`` with the same keywords (``chunk_size`` bounds each
block's numerical passes; progress bars are off in the workers), so a block's Jacobians are
the ones the in-memory call gives for those samples: bit for bit whenever ``f`` computes each
sample the same way whatever the batch size (see :mod:`batchjac.numerical.differences`). The results are
Dask arrays chunked like the batch, ``(B, *out_shape, *in_shape)`` per differentiated
argument, and nothing is computed until the caller asks: ``f``'s output shape and dtype come
from one call of the in-memory function on zero-sample batches, which also raises argument
errors and ``method="auto"``'s fallback warning at once, on the caller's side.

Extra arguments. A Dask array is batched: its leading axis must have length ``B`` and is
split like the batch. Anything else goes unchanged to every block, so an in-memory array
whose leading axis has length ``B`` is refused when the batch has several chunks: it could
be per-sample data (pass it as a Dask array) or a shared weight (bind it in a closure).

``method="auto"`` is decided at the caller for tracing (exact unless ``f`` does not trace on
the zero-sample batch); whether ``f`` is complex-safe is decided per block, as the in-memory
call decides it on the first samples of its batch.

``structured=True`` is refused: a ``bj.Jacobian`` (``Diagonal``, ``Shared``, ...) has no
Dask counterpart, and a Dask array of dense blocks would silently give up the structure
(``n`` times the memory of a diagonal). Map ``bj.jacobian(..., structured=True)`` over the
blocks yourself (``x.to_delayed()`` with ``dask.delayed``) to get one structured Jacobian
per block.
"""

from __future__ import annotations

import operator
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from batchjac.core.arrays import float_dtype, namespace
from batchjac.core.validation import NUMERICAL_METHODS, check_argnums, check_method

if TYPE_CHECKING:  # imported where used: the checking floor loads only when a check runs
    from batchjac.checking import Entry, JacobianCheck

RECHUNK_WARNING_BYTES = 64 << 20  # a rechunk of an argument larger than this is warned about


class RechunkWarning(UserWarning):
    """A Dask argument had to be rechunked (non-batch axes into one chunk, or batch chunks
    aligned with the first differentiated argument's) and it holds more than
    ``RECHUNK_WARNING_BYTES``: the whole argument moves between workers once."""


def is_dask_collection(a: Any) -> bool:
    """True for Dask collections, told by their type's module: Dask is not imported."""
    return type(a).__module__.partition(".")[0] == "dask" and hasattr(a, "__dask_graph__")


def has_dask_array(*objects: object) -> bool:
    """True if any of ``objects`` is a Dask collection (the hook in ``bj.value_and_jacobian``
    and ``bj.check_jacobian``).

    >>> import numpy as np
    >>> has_dask_array(np.ones(3), 2.0)
    False
    """
    return any(is_dask_collection(a) for a in objects)


# --------------------------------------------------------------------------------------
# Jacobians
# --------------------------------------------------------------------------------------


def value_and_jacobian(
    f: Callable[..., Any],
    x: Any,
    *args: Any,
    argnums: Any = 0,
    method: str = "auto",
    layout: str = "numerator",
    backend: str | None = None,
    chunk_size: int | None = None,
    structured: bool = False,
    progress: bool | None = None,
) -> tuple[Any, Any]:
    """Lazy ``bj.value_and_jacobian`` of a batch held in Dask arrays; same keywords.

    Returns ``(value, J)``: Dask arrays ``(B, *out_shape)`` and ``(B, *out_shape, *in_shape)``
    (numerator layout; ``(B, *in_shape, *out_shape)`` for ``"denominator"``), chunked along
    axis 0 like the batch and in one chunk elsewhere; ``J`` is a tuple when ``argnums`` is.

    >>> import dask.array as da, numpy as np, batchjac as bj
    >>> x = da.from_array(np.arange(6.0).reshape(3, 2), chunks=(2, 2))
    >>> y, J = bj.value_and_jacobian(lambda x: x**2, x, method="exact")
    >>> J.chunks
    ((2, 1), (2,), (2,))
    >>> J.compute()[2].tolist()
    [[8.0, 0.0], [0.0, 10.0]]
    """
    if structured:
        raise ValueError(
            "structured=True: a structured bj.Jacobian of a Dask array would have to be materialised "
            "block by block (Diagonal, Shared, ... have no Dask counterpart, and a Dask array of dense "
            "blocks is not structured); use structured=False for a Dask array of dense Jacobians, or "
            "map bj.jacobian(f, block, structured=True) over x.to_delayed() with dask.delayed"
        )
    if progress not in (None, True, False):
        raise ValueError(f"progress: expected True, False or None, got {progress!r}")
    single = not isinstance(argnums, (tuple, list))
    argnums = _argnums(argnums, 1 + len(args))
    call_args = _batched_arguments((x, *args), argnums)
    options = dict(method=method, layout=layout, backend=backend, chunk_size=chunk_size, progress=False)
    metas = _probe(f, call_args, argnums, options)
    outputs = _blockwise_outputs(f, call_args, argnums, options, metas)
    value, jacobians = outputs[0], tuple(outputs[1:])
    return value, jacobians[0] if single else jacobians


def _argnums(argnums: Any, count: int) -> tuple[int, ...]:
    """``argnums`` as a tuple of distinct positions among ``count`` arguments, checked."""
    return check_argnums(argnums, count)


def _name(i: int) -> str:
    return "x" if i == 0 else f"argument {i}"


def _batched_arguments(args: Sequence[Any], argnums: tuple[int, ...]) -> tuple[Any, ...]:
    """``args`` with every differentiated argument and every Dask argument a Dask array
    chunked along axis 0 like the batch and in one chunk elsewhere; other arguments unchanged.

    The batch chunks are those of the first differentiated Dask argument (else of the first
    Dask argument). Raises ``ValueError`` naming the argument on a batch size mismatch or an
    ambiguous in-memory array (leading axis of length ``B`` when the batch has several chunks).
    """
    da = _dask_array()
    reference = next((args[i] for i in argnums if is_dask_collection(args[i])), None)
    if reference is None:
        reference = next(a for a in args if is_dask_collection(a))
    reference = _as_dask(reference, "the batch", da)
    if reference.ndim == 0:
        raise ValueError("x: expected a batch (B, ...), got a 0-d Dask array")
    batch, chunks = reference.shape[0], reference.chunks[0]
    out = []
    for i, a in enumerate(args):
        if i in argnums or is_dask_collection(a):
            a = _as_dask(a, _name(i), da, float_data=i in argnums)
            out.append(_batch_chunked(a, batch, chunks, _name(i), da))
        else:
            _check_in_memory(a, batch, chunks, _name(i))
            out.append(a)
    return tuple(out)


def _dask_array() -> Any:
    """The ``dask.array`` module, or an ImportError saying how to install it."""
    try:
        import dask.array as da
    except ImportError as err:  # a Dask collection was passed without dask.array installed
        raise ImportError("Dask arrays need dask[array]: pip install 'batchjac[dask]'") from err
    return da


def _as_dask(a: Any, name: str, da: Any, float_data: bool = False) -> Any:
    """``a`` as a Dask array (in-memory arrays are wrapped; other Dask collections refused);
    with ``float_data``, integer data promoted to float64 and other data a ``TypeError``."""
    if is_dask_collection(a) and not isinstance(a, da.Array):
        raise TypeError(f"{name}: expected a Dask array, got {type(a).__name__}")
    if not isinstance(a, da.Array):
        a = da.asarray(a)
    if float_data:
        if a.ndim == 0:
            raise ValueError(f"{name}: expected a batch (B, ...), got a 0-d array")
        dtype = float_dtype(a.dtype, name)
        a = a if a.dtype == dtype else a.astype(dtype)
    return a


def _batch_chunked(a: Any, batch: int, chunks: Any, name: str, da: Any) -> Any:
    """``a`` ``(B, ...)`` rechunked to ``chunks`` along axis 0 and one chunk elsewhere."""
    if a.ndim == 0 or a.shape[0] != batch:
        got = "a 0-d array" if a.ndim == 0 else f"leading axis {a.shape[0]}"
        raise ValueError(
            f"{name}: a Dask argument is split along axis 0 with the batch of {batch} samples, got {got}"
        )
    wanted = (tuple(chunks), *((d,) for d in a.shape[1:]))
    if tuple(a.chunks) == wanted:
        return a
    if a.nbytes > RECHUNK_WARNING_BYTES:
        warnings.warn(
            f"{name}: rechunking {a.nbytes / 2**20:.0f} MiB from chunks {_short(a.chunks)} to "
            f"{_short(wanted)} (one chunk in the non-batch axes, the batch split like the first "
            "differentiated argument); chunk it that way when creating it to avoid the copy",
            RechunkWarning,
            stacklevel=_user_stacklevel(),
        )
    return a.rechunk(wanted)


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside batchjac."""
    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("batchjac."):
        frame, level = frame.f_back, level + 1
    return level


def _short(chunks: Any) -> str:
    """Chunks written compactly: each axis as its first chunk and the count of chunks."""
    return "(" + ", ".join(f"{c[0]}x{len(c)}" if len(c) > 1 else f"{c[0]}" for c in chunks) + ")"


def _check_in_memory(a: Any, batch: int, chunks: Any, name: str) -> None:
    """Refuse an in-memory array whose batching is ambiguous once the batch is split."""
    if len(chunks) > 1 and getattr(a, "ndim", 0) > 0 and a.shape[0] == batch:
        raise ValueError(
            f"{name}: an in-memory array with leading axis {batch} (the batch size) next to a Dask "
            "batch of several chunks is ambiguous: pass it as a Dask array if it is per-sample data "
            "(it is then split like the batch), or bind it in a closure if it is shared"
        )


def _probe(
    f: Callable[..., Any], args: Sequence[Any], argnums: tuple[int, ...], options: dict[str, Any]
) -> tuple[Any, ...]:
    """Zero-sample ``(value, *jacobians)`` of the in-memory call: the metas of the outputs.

    Runs ``f`` on zero-sample batches of the Dask arguments (no data is computed); argument
    errors and ``method="auto"``'s fallback warning come from here, at the caller.
    """
    from batchjac.engine import in_memory

    empty = [_empty_batch(a) if is_dask_collection(a) else a for a in args]
    value, jacobians = in_memory(f, *empty, argnums=argnums, **options)
    return (value, *jacobians)


def _empty_batch(a: Any) -> Any:
    """A zero-sample array ``(0, *a.shape[1:])`` of ``a``'s dtype and chunk type."""
    return namespace(a._meta).empty((0, *a.shape[1:]), dtype=a.dtype)


def _blockwise_outputs(
    f: Callable[..., Any],
    args: Sequence[Any],
    argnums: tuple[int, ...],
    options: dict[str, Any],
    metas: Sequence[Any],
) -> list[Any]:
    """Lazy Dask arrays ``[value, *jacobians]``, each block from one in-memory call."""
    da = _dask_array()
    pairs = []
    for i, a in enumerate(args):
        if is_dask_collection(a):
            pairs += [a, ("batch", *(f"arg{i}_axis{k}" for k in range(1, a.ndim)))]
        else:
            pairs += [a, None]
    batch_chunks = next(a for a in args if is_dask_collection(a)).chunks[0]
    blocks = da.blockwise(  # one tuple (value, *jacobians) per block of samples
        _block_value_and_jacobian,
        ("batch",),
        *pairs,
        concatenate=True,
        meta=np.empty((0,), dtype=object),
        f=f,
        argnums=argnums,
        options=options,
    )
    return [
        blocks.map_blocks(
            operator.getitem,
            k,
            chunks=(batch_chunks, *((d,) for d in meta.shape[1:])),
            new_axis=list(range(1, meta.ndim)),
            meta=meta,
        )
        for k, meta in enumerate(metas)
    ]


def _block_value_and_jacobian(
    *blocks: Any, f: Callable[..., Any], argnums: tuple[int, ...], options: dict[str, Any]
) -> tuple[Any, ...]:
    """``(value, *jacobians)`` of one block of samples by the in-memory call.

    ``method="auto"``'s warnings were given at the caller by :func:`_probe`; inside a worker
    they would only reach its log.
    """
    from batchjac.core.errors import NumericalFallbackWarning
    from batchjac.engine import in_memory

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalFallbackWarning)
        value, jacobians = in_memory(f, *blocks, argnums=argnums, **options)
    return (value, *jacobians)


# --------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------


def check_jacobian(
    f: Callable[..., Any],
    x: Any,
    J: Any = None,
    method: str = "complex-step",
    rtol: float | None = None,
    atol: float | None = None,
) -> JacobianCheck:
    """``bj.check_jacobian`` for a batch ``x`` (and/or a given ``J``) held in Dask arrays.

    Same tolerances and result as the in-memory check (a ``JacobianCheck``; an
    ``AssertionError`` naming the worst entry, its sample index counted over the whole
    batch). It computes: every block compares its Jacobian with its numerical one and sends
    back a summary (its largest errors, its entry closest to tolerance, and the few entries
    that could fail under the global ``atol``), never the Jacobians. The complex-safety
    fallback is decided on the first samples of the batch, as in memory.

    >>> import dask.array as da, numpy as np, batchjac as bj
    >>> x = da.from_array(np.arange(1.0, 7.0).reshape(3, 2), chunks=(2, 2))
    >>> bj.check_jacobian(lambda x: bj.exp(x), x, method="central").max_abs_error < 1e-6
    True
    """
    from batchjac.checking import JacobianCheck
    from batchjac.structured.types import Jacobian

    check_method(method, NUMERICAL_METHODS)
    if isinstance(J, Jacobian):
        raise ValueError(
            "J: a structured bj.Jacobian cannot be checked against a Dask batch; pass J.to_dense() "
            "reshaped to (B, *out_shape, *in_shape), as a Dask or in-memory array"
        )
    da = _dask_array()
    x = _batch_chunked(_as_dask(x, "x", da, float_data=True), len(x), _check_chunks(x, J, da), "x", da)
    method = _checked_method(f, x, method)
    numerical_meta = _numerical_meta(f, x, method)
    if J is not None:
        J = _given_dask(J, x.chunks[0], numerical_meta.shape, x.shape[0], da)
    rtol = _default_rtol(method, numerical_meta.dtype) if rtol is None else float(rtol)
    summaries = _block_summaries(f, x, J, method, rtol, atol)
    return _merge(summaries, method, rtol, atol, x.ndim - 1, JacobianCheck)


def _check_chunks(x: Any, J: Any, da: Any) -> tuple[int, ...]:
    """The batch chunks of a check: ``x``'s when it is a Dask array, else ``J``'s (when
    ``J``'s batch size is ``x``'s; a wrong ``J`` is reported by its shape check)."""
    if is_dask_collection(x) or J is None:
        return _as_dask(x, "x", da).chunks[0]
    J = _as_dask(J, "J", da)
    return J.chunks[0] if J.ndim and J.shape[0] == len(x) else (len(x),)


def _checked_method(f: Callable[..., Any], x: Any, method: str) -> str:
    """``method``, or ``"central"`` with a warning when ``f`` is not complex-safe on the
    first samples of ``x`` (which are computed)."""
    from batchjac.core.errors import NumericalFallbackWarning
    from batchjac.numerical.differences import HEAD_SAMPLES, NotComplexSafeError, numerical_value_and_jacobian

    if method != "complex-step":
        return method
    head = x[:HEAD_SAMPLES].compute()
    try:
        numerical_value_and_jacobian(f, (head,), (0,), method)
    except NotComplexSafeError as err:
        warnings.warn(
            f"check_jacobian: {err}; comparing with central differences instead",
            NumericalFallbackWarning,
            stacklevel=_user_stacklevel(),
        )
        return "central"
    return method


def _numerical_meta(f: Callable[..., Any], x: Any, method: str) -> Any:
    """The zero-sample numerical Jacobian ``(0, *out_shape, *in_shape)``: shape and dtype."""
    from batchjac.numerical.differences import numerical_value_and_jacobian

    _, (meta,) = numerical_value_and_jacobian(f, (_empty_batch(x),), (0,), method)
    return meta


def _given_dask(J: Any, batch_chunks: Any, meta_shape: Any, batch: int, da: Any) -> Any:
    """``J`` as a Dask array ``(B, *out_shape, *in_shape)`` chunked like the batch."""
    J = _as_dask(J, "J", da)
    shape = (batch, *meta_shape[1:])
    if tuple(J.shape) != shape:
        raise ValueError(
            f"J: expected shape {shape} (B, *out_shape, *in_shape, numerator layout), got {tuple(J.shape)}"
        )
    return _batch_chunked(J, batch, batch_chunks, "J", da)


def _default_rtol(method: str, dtype: DTypeLike) -> float:
    from batchjac.checking import DEFAULT_RTOL

    return DEFAULT_RTOL.get((method, np.dtype(dtype)), DEFAULT_RTOL[method, np.dtype(np.float32)])


@dataclass(frozen=True)
class BlockSummary:
    """What one block of samples sends back to :func:`check_jacobian`.

    ``shape`` is the whole Jacobian's ``(B, *out_shape, *in_shape)``; ``scale`` the block's
    ``max |N|``, ``value_scale`` its ``max |f(x)|`` and ``x_scale`` its ``max |x|`` (the default
    ``atol`` of :func:`batchjac.checking.atol_from_scales` is computed from the maxima over all
    blocks); ``closest`` its entry of largest ``error - rtol |N|`` (global sample index,
    None for an empty block) and ``margin`` that value. ``suspects`` are the entries that
    fail under the smallest ``atol`` the whole check can use (the given one, else
    ``rtol scale``, no larger than the merged default): their
    global flat ``index`` and their ``error``, ``slack = rtol |N|``, ``given`` and
    ``numerical``, as host arrays.
    """

    shape: tuple[int, ...]
    size: int
    scale: float
    value_scale: float
    x_scale: float
    dtype: np.dtype[Any]
    max_abs_error: float
    max_rel_error: float
    margin: float
    closest: Entry | None
    suspects: dict[str, Any]


def _block_summaries(
    f: Callable[..., Any], x: Any, J: Any, method: str, rtol: float, atol: float | None
) -> list[BlockSummary]:
    """One :class:`BlockSummary` per block of samples, computed (in block order)."""
    import dask

    starts = np.cumsum((0, *x.chunks[0][:-1]))
    x_blocks = x.to_delayed().ravel()
    J_blocks = J.to_delayed().ravel() if J is not None else [None] * len(x_blocks)
    summarise = dask.delayed(_summarise_block, pure=True)
    tasks = [
        summarise(f, xb, Jb, int(start), x.shape[0], method, rtol, atol)
        for xb, Jb, start in zip(x_blocks, J_blocks, starts)
    ]
    return list(dask.compute(*tasks))


def _summarise_block(
    f: Callable[..., Any],
    x: Any,
    J: Any,
    start: int,
    batch: int,
    method: str,
    rtol: float,
    atol: float | None,
) -> BlockSummary:
    """Compare one block's Jacobian with its numerical one, as the in-memory check does."""
    from batchjac.checking import _entry, _given, _max_relative
    from batchjac.numerical.differences import numerical_value_and_jacobian

    value, (numerical,) = numerical_value_and_jacobian(f, (x,), (0,), method)
    given = _given(f, x, J, numerical.shape)
    xp = namespace(given, numerical)
    error = xp.abs(given - numerical)
    slack = rtol * xp.abs(numerical)
    shape = (batch, *numerical.shape[1:])
    value_scale = float(xp.abs(value).max()) if value.size else 0.0
    x_scale = float(xp.abs(x).max()) if x.size else 0.0
    if not error.size:
        return BlockSummary(shape, 0, 0.0, value_scale, x_scale, numerical.dtype, 0.0, 0.0, -np.inf, None,
                            _host(error, slack, given, numerical, 0))  # fmt: skip
    scale = float(xp.abs(numerical).max())
    margins = (error - slack).ravel()
    local = int(xp.argmax(margins))
    closest = _entry(given, numerical, local, x.ndim - 1)
    floor = rtol * scale if atol is None else float(atol)  # the merged default atol is no smaller
    suspect = ~(error <= floor + slack)  # NaN entries are suspects too
    return BlockSummary(
        shape=shape,
        size=int(error.size),
        scale=scale,
        value_scale=value_scale,
        x_scale=x_scale,
        dtype=numerical.dtype,
        max_abs_error=float(error.max()),
        max_rel_error=_max_relative(xp, error, numerical),
        margin=float(margins[local]),
        closest=replace(closest, sample=closest.sample + start),
        suspects=_host(error, slack, given, numerical, start * (error.size // x.shape[0]), suspect),
    )


def _host(
    error: Any, slack: Any, given: Any, numerical: Any, offset: int, mask: Any = None
) -> dict[str, Any]:
    """The entries under ``mask`` (none without one) as host arrays: their global flat
    ``index`` (local flat index plus ``offset``), ``error``, ``slack``, ``given``, ``numerical``."""
    xp = namespace(error)
    mask = xp.zeros(error.shape, dtype=bool) if mask is None else mask
    arrays = {"error": error, "slack": slack, "given": given, "numerical": numerical}
    out = {"index": xp.flatnonzero(mask) + offset, **{k: v[mask] for k, v in arrays.items()}}
    return {k: v.get() if hasattr(v, "get") else v for k, v in out.items()}


def _merge(
    summaries: Sequence[BlockSummary],
    method: str,
    rtol: float,
    atol: float | None,
    in_ndim: int,
    JacobianCheck: type[JacobianCheck],
) -> JacobianCheck:
    """The :class:`JacobianCheck` of the whole batch from its blocks' summaries; raises
    ``AssertionError`` as the in-memory check does."""
    size = sum(s.size for s in summaries)
    if atol is None:
        from batchjac.checking import atol_from_scales

        atol = atol_from_scales(
            method, rtol, summaries[0].dtype, max(s.scale for s in summaries),
            max(s.value_scale for s in summaries), max(s.x_scale for s in summaries),
        )  # fmt: skip
    atol = float(atol)
    suspects = {k: np.concatenate([s.suspects[k] for s in summaries]) for k in summaries[0].suspects}
    allowed = atol + suspects["slack"]
    failed = int(np.count_nonzero(~(suspects["error"] <= allowed)))
    sized = [s for s in summaries if s.size]
    report = JacobianCheck(
        method=method,
        rtol=rtol,
        atol=atol,
        max_abs_error=float(np.max([s.max_abs_error for s in sized])) if sized else 0.0,
        max_rel_error=float(np.max([s.max_rel_error for s in sized])) if sized else 0.0,
        worst=_worst(summaries, suspects, allowed, failed, in_ndim),
    )
    if failed:
        raise AssertionError(
            f"check_jacobian: J differs from the {method} Jacobian in {failed} of {size} entries; "
            f"worst at {report.worst} > allowed {atol:.3g} + {rtol:.3g} |numerical| "
            f"(max abs error {report.max_abs_error:.3g}, max rel error {report.max_rel_error:.3g})"
        )
    return report


def _worst(
    summaries: Sequence[BlockSummary], suspects: dict[str, Any], allowed: Any, failed: int, in_ndim: int
) -> Entry | None:
    """The entry with the least room under its tolerance: among the failing ones when any
    fail (the first in batch order, as ``argmax`` picks), else the blocks' closest."""
    from batchjac.checking import Entry

    if failed:
        k = int(np.argmax(suspects["error"] - allowed))
        shape = summaries[0].shape
        index = np.unravel_index(int(suspects["index"][k]), shape)
        split = len(shape) - in_ndim
        return Entry(
            sample=int(index[0]),
            output_index=tuple(int(i) for i in index[1:split]),
            input_index=tuple(int(i) for i in index[split:]),
            given=float(suspects["given"][k]),
            numerical=float(suspects["numerical"][k]),
        )
    sized = [s for s in summaries if s.size]
    return max(sized, key=lambda s: s.margin).closest if sized else None
