"""Numerical batched Jacobians of black-box functions: complex-step, central, forward.

``f`` is any function written with NumPy or CuPy operations that maps a batch
``(B, *in_shape)`` to ``(B, *out_shape)`` sample by sample; it receives arrays of its
inputs' own type and never leaves their device. Column ``j`` of every sample's Jacobian
is found at once by perturbing input entry ``j`` of all ``B`` samples; the perturbations of
a chunk of ``k`` columns are stacked into one batch of ``k * B`` samples (``2k * B`` for
central, ``(k + 1) * B`` for forward differences) and ``f`` is called once on it, through
the backend primitive ``difference_columns``.

Steps, with ``eps`` the machine epsilon of the input's dtype and ``s = max(1, |x|)``:

- forward: ``h = sqrt(eps) s``; central: ``h = eps^(1/3) s`` (the steps that balance
  truncation against rounding error), each then rounded as ``h = (|x| + h) - |x|`` so
  that ``x + h`` and ``x - h`` are exact and the step taken is the step divided by;
- complex-step: ``h = eps s`` rounded down to a power of two. Nothing is subtracted, so
  the step only has to make the ``h^2`` truncation term negligible; ``eps`` does that
  without the underflow a fixed ``1e-20`` risks in complex64, and a power of two makes
  the division by ``h`` exact.

Extra positional arguments: one whose leading axis has length ``B`` (the differentiated
arguments not being differentiated in this pass, per-sample data) is *batched* and
repeated along axis 0 to match the stacked batch; anything else (shared weights of another
leading length, scalars, non-arrays) is passed through unchanged. A shared array whose
leading axis happens to equal ``B`` would be taken as batched: bind it in a closure instead.

Chunks and memory: ``chunk_size`` columns go into one call of ``f``. ``None`` takes as many
as fit in half the free memory of the inputs' device (host ``MemAvailable``, or CuPy's
``memGetInfo`` plus its pool's free blocks); :func:`memory_estimate` says what is counted.
A request that does not fit even one column at a time in the whole free memory raises
``MemoryError`` before anything is allocated. Every column is computed by the same
arithmetic whatever the chunking, so results are identical bit for bit for every
``chunk_size`` provided ``f`` computes each sample the same way whatever the batch size
(element-wise NumPy code and ``einsum`` do; BLAS ``matmul`` may round a row differently
with the number of rows).

Measured accuracy: the largest error relative to ``max(1, max |J|)`` against closed forms,
on ``N(0, 1)`` batches of 256 samples of the seven functions of ``tests/test_numerical.py``
(element-wise, a tanh MLP, softmax, ``X @ X``, vector to matrix, a scalar output, two
arguments):

==============  =========  =========
method          float64    float32
==============  =========  =========
complex-step    2e-16      1.3e-7
central         5e-11      8e-5
forward         3e-8       7e-4
==============  =========  =========
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from batchjac.backends.dispatch import select_backend
from batchjac.core.arrays import GPU, common_batch, device_of, namespace
from batchjac.core.errors import NotComplexSafeError

METHODS = ("complex-step", "central", "forward")

# Relative step of each method as a power of eps (see the module docstring).
_STEP_POWER = {"complex-step": 1.0, "central": 1 / 3, "forward": 1 / 2}

# A pass over k columns evaluates f on (a k + b) blocks of B samples: {method: (a, b)}.
_BLOCKS = {"complex-step": (1, 0), "central": (2, 0), "forward": (1, 1)}

HEAD_SAMPLES = 8  # f is first run on this many samples to learn its output shape
MEMORY_FRACTION = 0.5  # of the free memory, for chunk_size=None
FALLBACK_BUDGET = 1 << 30  # bytes, where the free memory cannot be read
PROGRESS_MIN_CHUNKS = 4  # progress=None shows a bar from this many passes ...
PROGRESS_DELAY_S = 1.0  # ... once they have taken this long, on a terminal
COMPLEX_SAFETY_RTOL = 0.1


def numerical_value_and_jacobian(f, args, argnums, method, *, backend=None, chunk_size=None, progress=None):
    """``f(*args)`` and its batched Jacobians with respect to ``args[i]`` for ``i in argnums``.

    ``args`` are the positional arguments of ``f``; each differentiated one is a real
    floating array ``(B, *in_shape_i)`` with the same ``B``. ``method`` is
    ``"complex-step"``, ``"central"`` or ``"forward"``. Returns ``(value, jacobians)``:
    ``value = f(*args)`` of shape ``(B, *out_shape)`` and a tuple with one Jacobian per
    entry of ``argnums``, in numerator layout ``(B, *out_shape, *in_shape_i)``, C-contiguous,
    of dtype ``result_type(value, args[i])``, on the inputs' device.

    ``chunk_size`` (positive int) is the number of input columns per call of ``f``; None
    picks it from free memory. ``progress``: True/False force a tqdm bar on stderr;
    None shows one for long computations on a terminal. The module docstring gives the
    steps, the rule for extra arguments and the memory bound. Raises ``MemoryError``
    before allocating when even one column does not fit, :class:`NotComplexSafeError`
    (complex-step only), ``ValueError`` when ``f`` changes the batch size and
    ``TypeError`` when it returns non-floating data.

    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> y, (J,) = numerical_value_and_jacobian(lambda x: x**2, (x,), (0,), "complex-step")
    >>> J.shape, J[1].tolist()
    ((2, 2, 2), [[6.0, 0.0], [0.0, 8.0]])
    """
    args, argnums = tuple(args), _argnums(argnums, len(args))
    _check_options(method, chunk_size, progress)
    batch = _batch_size(args, argnums)
    ops = select_backend(*(a for a in args if _is_array(a)), backend=backend)
    box = BlackBox(f, args, tuple(_is_array(a) and a.ndim > 0 and a.shape[0] == batch for a in args), batch)
    head_value = box.first(min(batch, HEAD_SAMPLES)).value()
    box = box.with_output(head_value.shape[1:], head_value.dtype)
    head = box.first(min(batch, HEAD_SAMPLES))
    chunks = [_chunk_size(box, i, argnums, method, chunk_size) for i in argnums]
    value = box.value()
    passes = sum(-(-_size(box.args[i].shape[1:]) // k) for i, k in zip(argnums, chunks))
    with _progress_bar(passes, progress) as bar:
        jacobians = tuple(_jacobian(box, i, method, k, ops, head, bar) for i, k in zip(argnums, chunks))
    return value, jacobians


@dataclass(frozen=True)
class BlackBox:
    """``f`` with its positional arguments, evaluated on stacked samples of one of them.

    ``batched[i]`` says whether ``args[i]`` carries the batch axis (its leading axis has
    length ``batch``); ``out_shape`` and ``out_dtype`` are known after the first call.
    """

    f: Callable
    args: tuple
    batched: tuple
    batch: int
    out_shape: tuple | None = None
    out_dtype: np.dtype | None = None

    def with_output(self, out_shape, out_dtype) -> "BlackBox":
        return BlackBox(self.f, self.args, self.batched, self.batch, tuple(out_shape), np.dtype(out_dtype))

    def first(self, count: int) -> "BlackBox":
        """The same problem restricted to the first ``count`` samples."""
        args = tuple(a[:count] if b else a for a, b in zip(self.args, self.batched))
        return BlackBox(self.f, args, self.batched, count, self.out_shape, self.out_dtype)

    def value(self):
        """``f(*args)``: ``(batch, *out_shape)``."""
        return self._checked(self.f(*self.args), self.batch, complex_input=False)

    def of_argument(self, argnum: int):
        """``f`` as a map of flattened samples of ``args[argnum]``: ``(N, n) -> (N, m)``.

        ``N`` is a multiple of ``batch``: the batched arguments are repeated ``N / batch``
        times along axis 0, in the block order of the stacked samples.
        """
        in_shape = self.args[argnum].shape[1:]

        def g(flat):
            count = flat.shape[0]
            reps = count // self.batch
            call = [_repeat(a, reps) if b else a for a, b in zip(self.args, self.batched)]
            call[argnum] = flat.reshape(count, *in_shape)
            complex_input = flat.dtype.kind == "c"
            try:
                y = self.f(*call)
            except TypeError as err:
                if not complex_input:
                    raise
                # f ran on real data already, so only complex input can have caused this.
                raise NotComplexSafeError(f"f does not accept complex input: {err}") from err
            return self._checked(y, count, complex_input).reshape(count, -1)

        return g

    def _checked(self, y, count, complex_input):
        """``y`` if it is a valid output of ``f`` for a batch of ``count`` samples."""
        if not _is_array(y):
            raise TypeError(f"f must return an array (B, *out_shape), got {type(y).__name__}")
        if y.ndim == 0 or y.shape[0] != count:
            raise ValueError(
                f"f must map a batch of {count} samples to {count} outputs, sample by sample; "
                f"it returned shape {tuple(y.shape)}"
            )
        if complex_input and y.dtype.kind != "c":
            raise NotComplexSafeError(
                f"f returned {y.dtype} data for complex input, so complex-step cannot see its "
                "derivative; use method='central', or write f with complex-safe operations"
            )
        if not complex_input and y.dtype.kind != "f":
            raise TypeError(f"f must return real floating-point data, got dtype {y.dtype}")
        if self.out_shape is not None and tuple(y.shape[1:]) != self.out_shape:
            raise ValueError(
                f"f returned samples of shape {tuple(y.shape[1:])} for a batch of {count}, "
                f"but {self.out_shape} before"
            )
        return y


def _jacobian(box: BlackBox, argnum, method, chunk, ops, head: BlackBox, bar):
    """``(B, *out_shape, *in_shape)``: the Jacobian of ``box`` with respect to one argument."""
    x = box.args[argnum]
    in_shape, n, m = x.shape[1:], _size(x.shape[1:]), _size(box.out_shape)
    J = namespace(x).empty((box.batch, m, n), dtype=np.result_type(box.out_dtype, x.dtype))
    if J.size:
        flat = x.reshape(box.batch, n)
        if method == "complex-step":
            _check_complex_safe(head.of_argument(argnum), flat[: head.batch])
        h = steps(flat, method)
        g = box.of_argument(argnum)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            J[:, :, start:stop] = ops.difference_columns(
                g, flat, range(start, stop), h[:, start:stop], method
            )
            bar.update()
    return J.reshape(box.batch, *box.out_shape, *in_shape)


def steps(x, method):
    """The step of every entry of ``x`` for ``method``, of ``x``'s shape and dtype.

    ``s = max(1, |x|)``; forward ``sqrt(eps) s`` and central ``eps^(1/3) s`` rounded so
    that ``x + h`` and ``x - h`` are exact; complex-step ``eps s`` rounded down to a power
    of two.

    >>> import numpy as np
    >>> x = np.array([[0.1, -3.0, 1e6]])
    >>> h = steps(x, "central")
    >>> bool(np.all((x + h) - (x - h) == 2 * h))
    True
    """
    xp = namespace(x)
    eps = np.finfo(x.dtype).eps
    magnitude = xp.abs(x)
    h = x.dtype.type(eps ** _STEP_POWER[method]) * xp.maximum(magnitude, 1)
    if method == "complex-step":
        _, exponent = xp.frexp(h)
        return xp.ldexp(xp.full_like(h, 0.5), exponent)
    # Rounding |x| + h to the grid of |x| makes the step a whole number of units in the
    # last place of x, representable on either side of x whatever its sign.
    return (magnitude + h) - magnitude


def _check_complex_safe(g, x):
    """Raise :class:`NotComplexSafeError` unless ``g``'s complex step agrees with central.

    ``g``: ``(N, n) -> (N, m)``, ``x``: ``(P, n)``; one directional derivative at every
    sample, by a complex step and by a central difference (a kink or a real-valued output
    shows up as a gross disagreement; the two methods' own errors are far smaller).
    """
    xp = namespace(x)
    eps = float(np.finfo(x.dtype).eps)
    scale = max(1.0, float(xp.max(xp.abs(x))))
    # A fixed direction with entries of both signs: no row of a Jacobian is orthogonal to
    # it except by accident.
    v = xp.asarray(np.random.default_rng(0).standard_normal(x.shape[1]), dtype=x.dtype)
    h_complex, h_real = eps * scale, eps ** (1 / 3) * scale
    z = x.astype(np.result_type(x.dtype, np.complex64)) + 1j * h_complex * v
    by_complex = g(z).imag / h_complex
    y = g(xp.concatenate([x + h_real * v, x - h_real * v]))
    by_central = (y[: len(x)] - y[len(x) :]) / (2 * h_real)
    error = float(xp.max(xp.abs(by_complex - by_central)))
    allowed = COMPLEX_SAFETY_RTOL * float(xp.max(xp.abs(by_central))) + math.sqrt(eps) * max(
        1.0, float(xp.max(xp.abs(y)))
    )
    if error > allowed:  # NaN inputs give no verdict; their Jacobian shows NaN anyway
        raise NotComplexSafeError(
            f"f is not complex-safe: along a test direction its complex-step derivative differs "
            f"from the central difference by {error:.3g} (allowed {allowed:.3g}); f drops an "
            "imaginary part (abs, real, a cast to float) or is not differentiable at x; "
            "use method='central'"
        )


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of a numerical Jacobian with respect to one argument, ``k`` columns a pass.

    ``jacobians``: every Jacobian of the call, ``(B, *out, *in_i)``, all alive at the end.
    ``workspace``: the value ``(B, *out)``, this argument's steps and flattened copy
    ``(B, *in)``. ``per_pass + k * per_column``: the stacked perturbations of ``x`` (complex
    for complex-step), the repeated batched extra arguments and ``f``'s output, one block of
    ``B`` samples each per evaluation, plus the difference and quotient ``(B, m)`` of each
    column. ``f``'s own intermediates are not counted.
    """

    jacobians: int
    workspace: int
    per_pass: int
    per_column: int

    def bytes(self, columns: int) -> int:
        return self.jacobians + self.workspace + self.per_pass + columns * self.per_column


def memory_estimate(box: BlackBox, argnum, argnums, method) -> MemoryEstimate:
    """The :class:`MemoryEstimate` of the Jacobian of ``box`` with respect to ``args[argnum]``."""
    x, batch, m = box.args[argnum], box.batch, _size(box.out_shape)
    n = _size(x.shape[1:])
    stacked = np.result_type(x.dtype, np.complex64) if method == "complex-step" else x.dtype
    output = np.result_type(box.out_dtype, stacked)
    extras = sum(_nbytes(a) for i, (a, b) in enumerate(zip(box.args, box.batched)) if b and i != argnum)
    block = batch * (n * stacked.itemsize + m * output.itemsize) + extras
    jacobian_item = np.result_type(box.out_dtype, x.dtype).itemsize
    a, b = _BLOCKS[method]
    return MemoryEstimate(
        jacobians=sum(batch * m * _size(box.args[i].shape[1:]) * jacobian_item for i in argnums),
        workspace=batch * m * box.out_dtype.itemsize + 2 * _nbytes(x),
        per_pass=b * block,
        per_column=a * block + 2 * batch * m * jacobian_item,
    )


def free_memory(x) -> int | None:
    """Bytes free for new arrays on ``x``'s device, or None where that cannot be read.

    Host: ``MemAvailable`` of ``/proc/meminfo``, else ``os.sysconf`` available pages. GPU:
    CuPy's ``memGetInfo`` free bytes plus the free blocks held by its memory pool.
    """
    if device_of(x) == GPU:
        cp = namespace(x)
        free, _total = cp.cuda.runtime.memGetInfo()
        return free + cp.get_default_memory_pool().free_bytes()
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _chunk_size(box: BlackBox, argnum, argnums, method, chunk_size) -> int:
    """Columns per pass for ``args[argnum]``; ``MemoryError`` if even one does not fit."""
    x = box.args[argnum]
    n = _size(x.shape[1:])
    estimate = memory_estimate(box, argnum, argnums, method)
    free = free_memory(x)
    if free is not None and estimate.bytes(1) > free:
        raise MemoryError(
            f"the {method} Jacobian with respect to argument {argnum} needs {estimate.bytes(1):,} "
            f"bytes even one column at a time: {estimate.jacobians:,} for the Jacobians "
            f"(B, *out_shape, *in_shape) = {(box.batch, *box.out_shape, *x.shape[1:])}, and "
            f"{estimate.bytes(1) - estimate.jacobians:,} for the value, the steps and one pass of f "
            f"(see batchjac.numerical.differences.MemoryEstimate); only {free:,} bytes are free on the "
            f"{device_of(x)}"
        )
    if chunk_size is not None:
        return chunk_size
    budget = FALLBACK_BUDGET if free is None else int(MEMORY_FRACTION * free)
    fits = (budget - estimate.bytes(0)) // max(estimate.per_column, 1)
    return int(min(max(n, 1), max(fits, 1)))


# --------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        pass


def _progress_bar(passes: int, progress):
    """A tqdm bar over ``passes`` calls of ``f`` on stderr, or a stand-in that shows nothing.

    ``progress=None`` shows one only on a terminal, for at least ``PROGRESS_MIN_CHUNKS``
    passes, once ``PROGRESS_DELAY_S`` have gone by, and only if tqdm is installed;
    ``progress=True`` without tqdm raises ImportError.
    """
    wanted = progress if progress is not None else passes >= PROGRESS_MIN_CHUNKS and _stderr_is_terminal()
    if not wanted:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError as err:
        if progress is None:
            return _NoProgress()
        raise ImportError("progress=True needs tqdm, which is not installed: pip install tqdm") from err
    return tqdm(
        total=passes,
        desc="numerical Jacobian",
        unit="pass",
        file=sys.stderr,
        delay=0 if progress else PROGRESS_DELAY_S,
    )


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------


def _is_array(a) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype") and hasattr(a, "ndim")


def _size(shape) -> int:
    return math.prod(int(d) for d in shape)


def _nbytes(a) -> int:
    """Bytes of ``a`` as a contiguous array (a broadcast view counts in full)."""
    return _size(a.shape) * a.dtype.itemsize


def _repeat(a, reps: int):
    """``a`` repeated ``reps`` times along axis 0: ``(B, ...) -> (reps * B, ...)``."""
    if reps == 1:
        return a
    xp = namespace(a)
    return xp.broadcast_to(a, (reps, *a.shape)).reshape(reps * a.shape[0], *a.shape[1:])


def _argnums(argnums, count: int) -> tuple:
    argnums = tuple(argnums)
    if not argnums or any(
        not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < count for i in argnums
    ):
        raise ValueError(
            f"argnums: expected a non-empty tuple of positions among {count} arguments, got {argnums!r}"
        )
    return argnums


def _check_options(method, chunk_size, progress) -> None:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size: expected a positive int or None, got {chunk_size!r}")
    if progress not in (None, True, False):
        raise ValueError(f"progress: expected True, False or None, got {progress!r}")


def _batch_size(args, argnums) -> int:
    """The common leading length ``B`` of the differentiated arguments, checked."""
    for i in argnums:
        a = args[i]
        if not _is_array(a) or a.dtype.kind != "f":
            got = f"dtype {a.dtype}" if _is_array(a) else type(a).__name__
            raise TypeError(f"argument {i}: expected a real floating-point array (B, ...), got {got}")
    return common_batch([args[i] for i in argnums], [f"argument {i}" for i in argnums])
