"""Numerical batched Jacobians of black-box functions: complex-step, central, forward.

``f`` is any function written with NumPy or CuPy operations (or PyTorch / JAX ones, see
*Frameworks*) that maps a batch ``(B, *in_shape)`` to ``(B, *out_shape)`` sample by sample;
it receives arrays of its inputs' own type and never leaves their device. Column ``j`` of
every sample's Jacobian is found at once by perturbing input entry ``j`` of all ``B``
samples; the perturbations of a chunk of ``k`` columns are stacked into one batch of
``k * B`` samples (``2k * B`` for central, ``(k + 1) * B`` for forward differences) and
``f`` is called once on it, through the backend primitive ``difference_columns``.

Steps, with ``eps`` the machine epsilon of the input's dtype and ``s = max(1, |x|)``:

- forward: ``h = sqrt(eps) s``; central: ``h = eps^(1/3) s`` (the steps that balance
  truncation against rounding error), each then rounded as ``h = (|x| + h) - |x|`` so
  that ``x + h`` and ``x - h`` are exact and the step taken is the step divided by;
- complex-step: ``h = eps s`` rounded down to a power of two. Nothing is subtracted, so
  the step only has to make the ``h^2`` truncation term negligible; ``eps`` does that
  without the underflow a fixed ``1e-20`` risks in complex64, and a power of two makes
  the division by ``h`` exact.

Inputs are never modified, and ``f`` never sees the caller's buffers: every call of ``f``
gets fresh NumPy/CuPy arrays (perturbed stacks, or copies of the arguments), so an ``f``
that writes into its arguments changes only batchjac's private copies. Other objects
(Python numbers, lists) are passed as they are.

Extra positional arguments: one whose leading axis has length ``B`` (the differentiated
arguments not being differentiated in this pass, per-sample data) is *batched* and
repeated along axis 0 to match the stacked batch; anything else (shared weights of another
leading length, scalars, non-arrays) is passed through unchanged. A shared array whose
leading axis happens to equal ``B`` would be taken as batched: bind it in a closure instead.

Checks (each raises rather than return a wrong Jacobian):

- **Samples must not mix.** Stacking only works when ``f`` maps each sample on its own.
  Before the columns of an argument are computed, ``f`` is evaluated once more on ``2B``
  samples: two copies of the batch, each sample moved by a positive step of relative size
  ``eps^(1/3)`` in exactly one copy (a random half of the samples in the first, the rest
  in the second). The unmoved samples must give ``f``'s value again up to rounding
  (``64 eps`` times the sample's output and input-to-output scale); otherwise a
  ``ValueError`` says that ``f`` mixes samples (``x - x.mean(axis=0)``, a batch norm,
  ``x[0]``) or depends on the batch size. Couplings through the whole batch (means, sums,
  norms, maxima over axis 0) and through the first or last sample are always found; a
  coupling between two particular samples is found when the two fall into different
  halves, with probability 1/2 for each coupled pair. Cost: one evaluation of ``f`` on
  ``2B`` samples per differentiated argument.
- **Complex safety** (complex-step). The complex-step Jacobian ``J`` is right only if
  ``f`` carries imaginary parts through. After ``J`` is computed, every sample is checked
  along ``2`` random directions ``u`` (entries ``eps^(1/3) [0.5, 1.5] max(1, |x|)`` with
  random signs, so that every column takes part) against central differences of ``f`` on
  real input: the half differences ``A(s) = (f(x + su) - f(x - su)) / 2`` at three steps
  ``s = 1, sqrt(3), pi`` give ``D = J_true u`` by Richardson extrapolation, and the fit's
  miss at the third step bounds the truncation error without any knowledge of ``f``.
  Where the data show ``f`` smooth on the scale of the step (leading terms dominating,
  fits predicting the third step; or ``f`` not moving at all), ``|D - J u|`` must stay
  within the miss or ``16`` times the rounding error (of ``f``'s values, of the
  perturbations, and the noise the misses measure), output by output. A sample that
  fails along both directions, or that the data cannot judge, is checked again with steps
  4 and 16 times smaller; it is reported if it failed and no step reconciled it. A Jacobian that misses a part of the derivative
  (``abs``, ``.real``, ``conj``, a cast to float, a branch on ``x.real`` taken by any
  sample) leaves a first-order discrepancy, which is seen unless it is below about
  ``16 eps^(2/3)`` of ``|J u|`` at the step where the data are smooth (``6e-10`` in
  float64, ``4e-4`` in float32, 4 and 16 times more at the smaller steps): what remains
  undetected is then no larger than the error of central differences themselves. What
  the check cannot judge, it accepts: samples where ``f`` is not smooth on the scale of
  any step tried (a kink, pole or oscillation within about ``eps^(1/3) / 16`` relative of
  ``x``), and error rows of ``J`` nearly orthogonal to both directions (for an error ten
  times the tolerance, below ``1e-4``). Measured on 100 random batches each: every
  ``abs`` construction tried (``x + 0.05 |x|``, ``(x + |x|) / 2``, ``sum |x|``,
  ``max |x|``, ``norm``, ``x sign(x)``, ``x conj(x)``, branches on ``x.real``) is caught
  in float64, and in float32 for ``|x| ~ 1``; in float32 with ``|x| ~ 0.01`` (kinks
  within the step) 41 to 78 of 100 one-sample batches and up to 12 of 100 batches of 8
  samples pass unseen. No smooth function tried was reported (polynomials to degree 7,
  ``exp``, ``log``, rational functions near poles, ``sin(1000 x)`` in float32, matrix
  powers, solves and determinants, a tanh MLP, 200-sample batches). Conversely, an
  ``f`` that rounds perturbations of the central step's size away entirely
  (``(x + 1e12) - 1e12`` in float64) looks flat and is reported although complex step is
  right for it. A failure raises :class:`NotComplexSafeError` (``method="auto"`` then
  falls back to central differences with a warning saying why). A function that returns
  real data for complex input is taken to have a zero imaginary part: the check accepts
  it only where ``f`` does not depend on the argument (its Jacobian is zero). Cost: one
  evaluation of ``f`` on ``12B`` real samples per differentiated argument (more only for
  samples that disagree), next to the ``nB`` complex ones of the Jacobian, and two
  batched products of ``J`` with vectors.

Frameworks: ``f`` may be written for PyTorch or JAX arrays. ``f_framework="torch"`` or
``"jax"`` (or PyTorch / JAX arrays among ``args``, which set it) makes every call of
``f`` receive that framework's arrays, made from batchjac's NumPy/CuPy arrays through
DLPack without a copy, and its results are taken back the same way; the Jacobians come
back as NumPy/CuPy arrays. A PyTorch tensor that requires grad is detached. JAX needs
``jax_enable_x64`` for float64 input (it would silently compute in float32).

Chunks and memory: ``chunk_size`` columns go into one call of ``f``. ``None`` takes as many
as fit in half the free memory of the inputs' device (host ``MemAvailable``, or CuPy's
``memGetInfo`` plus its pool's free blocks); :func:`memory_estimate` says what is counted.
A request that does not fit, with ``chunk_size`` as given or one column at a time for
``None``, raises ``MemoryError`` before anything is allocated; the checks above run on
blocks of samples that fit beside the Jacobians. Every column is computed by the same
arithmetic whatever the chunking, so results are identical bit for bit for every
``chunk_size`` provided ``f`` computes each sample the same way whatever the batch size
(element-wise NumPy code and ``einsum`` do; BLAS ``matmul`` may round a row differently
with the number of rows).

Measured accuracy: the largest error relative to ``max(1, max |J|)`` against closed forms,
on ``N(0, 1)`` batches of 256 samples of the seven functions of
``tests/numerical/test_differences.py`` (element-wise, a tanh MLP, softmax, ``X @ X``,
vector to matrix, a scalar output, two arguments):

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numpy.typing import DTypeLike

from batchjac.backends.dispatch import select_backend
from batchjac.core.arrays import GPU, as_array, common_batch, device_of, framework_of, namespace
from batchjac.core.errors import NotComplexSafeError
from batchjac.core.validation import (
    NUMERICAL_METHODS,
    check_argnums,
    check_choice,
    check_chunk_size,
    check_method,
    check_progress,
)

# batchjac.integrations.dask imports the method list from here; its home is core.validation.
METHODS = NUMERICAL_METHODS

# Relative step of each method as a power of eps (see the module docstring).
_STEP_POWER = {"complex-step": 1.0, "central": 1 / 3, "forward": 1 / 2}

# A pass over k columns evaluates f on (a k + b) blocks of B samples: {method: (a, b)}.
_BLOCKS = {"complex-step": (1, 0), "central": (2, 0), "forward": (1, 1)}

HEAD_SAMPLES = 8  # f is first run on this many samples to learn its output shape
MEMORY_FRACTION = 0.5  # of the free memory, for chunk_size=None
FALLBACK_BUDGET = 1 << 30  # bytes, where the free memory cannot be read
PROGRESS_MIN_CHUNKS = 4  # progress=None shows a bar from this many passes ...
PROGRESS_DELAY_S = 1.0  # ... once they have taken this long, on a terminal

SAFETY_DIRECTIONS = 2  # random directions per sample of the complex-safety check
SAFETY_FACTOR = 16.0  # a disagreement counts beyond this many rounding errors ...
SAFETY_LEVELS = 3  # ... at each of this many steps, eps^(1/3) then each 4 times smaller
SAFETY_STEP_RATIO = 4.0
SAFETY_ASYMPTOTIC = 64.0  # the fit describes the data: cubic term and miss below 1/64 of D
MIXING_ULPS = 64.0  # allowed motion of an unmoved sample, in eps of its scale
_SEED = 20260113  # the checks' random directions and halves: reproducible runs

FRAMEWORKS = ("numpy", "cupy", "torch", "jax")
_FOREIGN = ("torch", "jax")  # frameworks whose arrays f takes through DLPack


def numerical_value_and_jacobian(
    f: Callable[..., Any],
    args: Sequence[Any],
    argnums: Any,
    method: str,
    *,
    backend: str | None = None,
    chunk_size: int | None = None,
    progress: bool | None = None,
    f_framework: str | None = None,
) -> tuple[Any, tuple[Any, ...]]:
    """``f(*args)`` and its batched Jacobians with respect to ``args[i]`` for ``i in argnums``.

    ``args`` are the positional arguments of ``f``; each differentiated one is a real
    floating array ``(B, *in_shape_i)`` with the same ``B``. ``argnums`` is an integer or
    a tuple of them; ``method`` is ``"complex-step"``, ``"central"`` or ``"forward"``.
    Returns ``(value, jacobians)``: ``value = f(*args)`` of shape ``(B, *out_shape)`` and a
    tuple with one Jacobian per entry of ``argnums``, in numerator layout
    ``(B, *out_shape, *in_shape_i)``, C-contiguous, of dtype ``result_type(value, args[i])``,
    on the inputs' device (NumPy or CuPy arrays, whatever ``f_framework``).

    ``chunk_size`` (positive integer) is the number of input columns per call of ``f``;
    None picks it from free memory. ``progress``: True/False force a tqdm bar on stderr;
    None shows one for long computations on a terminal. ``f_framework`` (``"torch"``,
    ``"jax"``; None: that of the arguments) is the framework whose arrays ``f`` takes. The
    module docstring gives the steps, the rule for extra arguments, the checks and their
    cost, and the memory bound.

    Raises ``MemoryError`` before allocating when the request does not fit,
    :class:`NotComplexSafeError` (complex-step only) when ``f`` does not carry imaginary
    parts through, ``ValueError`` when ``f`` changes the batch size or mixes samples,
    ``TypeError`` when it returns non-floating data or an argument is of the wrong kind.

    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> y, (J,) = numerical_value_and_jacobian(lambda x: x**2, (x,), 0, "complex-step")
    >>> J.shape, J[1].tolist()
    ((2, 2, 2), [[6.0, 0.0], [0.0, 8.0]])
    """
    chunk_size, progress = check_chunk_size(chunk_size), check_progress(progress)
    box, argnums, method, ops = black_box(f, args, argnums, method, backend=backend, f_framework=f_framework)
    plans = [_plan(box, i, argnums, method, chunk_size) for i in argnums]
    value = box.value()
    passes = sum(-(-_size(box.args[i].shape[1:]) // plan.columns) for i, plan in zip(argnums, plans))
    with _progress_bar(passes, progress) as bar:
        jacobians = tuple(_jacobian(box, i, method, plan, ops, value, bar) for i, plan in zip(argnums, plans))
    return value, jacobians


def black_box(
    f: Callable[..., Any],
    args: Sequence[Any],
    argnums: Any,
    method: str,
    *,
    backend: str | None = None,
    f_framework: str | None = None,
) -> tuple[BlackBox, tuple[int, ...], str, Any]:
    """The validated problem of a numerical Jacobian: ``(box, argnums, method, ops)``.

    ``box`` is ``f`` with its arguments (PyTorch/JAX ones taken as NumPy/CuPy views, ``f``
    still receiving its framework's arrays), its output shape and dtype learnt from a first
    call on the first ``HEAD_SAMPLES`` samples; ``ops`` the backend of the inputs. The one
    setup of the dense path and of the column-colouring path
    (:mod:`batchjac.numerical.coloring`).
    """
    args = tuple(args)
    argnums = check_argnums(argnums, len(args))
    method = check_method(method, NUMERICAL_METHODS)
    f, args = _in_framework(f, args, f_framework)
    # np.matrix and masked arrays are refused here too (core.arrays says why); others pass.
    args = tuple(
        as_array(a, f"argument {i}") if i in argnums and _is_array(a) else a for i, a in enumerate(args)
    )
    batch = _batch_size(args, argnums)
    ops = select_backend(*(a for a in args if _is_array(a)), backend=backend)
    box = BlackBox(f, args, tuple(_is_array(a) and a.ndim > 0 and a.shape[0] == batch for a in args), batch)
    head_value = box.samples(0, min(batch, HEAD_SAMPLES)).value()
    return box.with_output(head_value.shape[1:], head_value.dtype), argnums, method, ops


@dataclass(frozen=True)
class BlackBox:
    """``f`` with its positional arguments, evaluated on stacked samples of one of them.

    ``batched[i]`` says whether ``args[i]`` carries the batch axis (its leading axis has
    length ``batch``); ``out_shape`` and ``out_dtype`` are known after the first call.
    Every call of ``f`` gets private copies of the NumPy/CuPy arguments.
    """

    f: Callable[..., Any]
    args: tuple[Any, ...]
    batched: tuple[bool, ...]
    batch: int
    out_shape: tuple[int, ...] | None = None
    out_dtype: np.dtype | None = None

    def with_output(self, out_shape: Sequence[int], out_dtype: DTypeLike) -> BlackBox:
        return BlackBox(self.f, self.args, self.batched, self.batch, tuple(out_shape), np.dtype(out_dtype))

    @property
    def out_size(self) -> int:
        """The entries of one sample of ``f``'s output (known once :meth:`with_output` ran)."""
        if self.out_shape is None:
            raise ValueError("the output of f is not known before f was evaluated once")
        return _size(self.out_shape)

    def samples(self, start: int, stop: int) -> BlackBox:
        """The same problem restricted to the samples ``start .. stop - 1``."""
        args = tuple(a[start:stop] if b else a for a, b in zip(self.args, self.batched))
        return BlackBox(self.f, args, self.batched, stop - start, self.out_shape, self.out_dtype)

    def take(self, indices: Any) -> BlackBox:
        """The same problem restricted to the samples ``indices`` (an integer array)."""
        args = tuple(a[indices] if b else a for a, b in zip(self.args, self.batched))
        return BlackBox(self.f, args, self.batched, len(indices), self.out_shape, self.out_dtype)

    def call_args(self, count: int, skip: int | None = None) -> list[Any]:
        """The arguments of ``f`` for a stacked batch of ``count = r * batch`` samples:
        batched arrays repeated ``r`` times, fresh copies of the other arrays; ``args[skip]``
        (the argument the caller stacks itself) as None."""
        reps = count // self.batch if self.batch else 1
        return [
            None if i == skip else _repeat(a, reps) if b else _private(a)
            for i, (a, b) in enumerate(zip(self.args, self.batched))
        ]

    def value(self) -> Any:
        """``f(*args)``: ``(batch, *out_shape)``."""
        return self._checked(self.f(*self.call_args(self.batch)), self.batch, complex_input=False)

    def of_argument(self, argnum: int) -> ArgumentMap:
        """``f`` as a map of flattened samples of ``args[argnum]``: ``(N, n) -> (N, m)``."""
        return ArgumentMap(self, argnum)

    def _checked(self, y: Any, count: int, complex_input: bool) -> Any:
        """``y`` if it is a valid output of ``f`` for a batch of ``count`` samples."""
        if framework_of(y) in _FOREIGN:
            y = as_array(y, "f's output")
        if not _is_array(y):
            raise TypeError(f"f must return an array (B, *out_shape), got {type(y).__name__}")
        if y.ndim == 0 or y.shape[0] != count:
            raise ValueError(
                f"f must map a batch of {count} samples to {count} outputs, sample by sample; "
                f"it returned shape {tuple(y.shape)}"
            )
        if complex_input and y.dtype.kind == "f":
            # No imaginary part came back: the complex step reads a zero derivative, which
            # the complex-safety check accepts only if f does not depend on this argument.
            y = y.astype(np.result_type(y.dtype, np.complex64))
        if complex_input and y.dtype.kind != "c":
            raise TypeError(f"f must return floating-point data, got dtype {y.dtype} for complex input")
        if not complex_input and y.dtype.kind != "f":
            raise TypeError(f"f must return real floating-point data, got dtype {y.dtype}")
        if self.out_shape is not None and tuple(y.shape[1:]) != self.out_shape:
            raise ValueError(
                f"f returned samples of shape {tuple(y.shape[1:])} for a batch of {count}, "
                f"but {self.out_shape} before"
            )
        return y


class ArgumentMap:
    """``f`` as a map of flattened samples of one argument: ``g(flat) -> (N, m)``.

    ``flat`` is ``(N, n)`` with ``N`` a multiple of the batch; the batched arguments are
    repeated ``N / batch`` times along axis 0, in the block order of the stacked samples.
    ``flat`` itself is passed to ``f`` (reshaped, not copied): callers pass stacks they
    own and do not read again after the call.
    """

    def __init__(self, box: BlackBox, argnum: int):
        self.box, self.argnum = box, argnum
        self.real_for_complex = False  # f returned real data for complex input

    def take(self, indices: Any) -> ArgumentMap:
        """The map restricted to the samples ``indices`` of the batch."""
        return ArgumentMap(self.box.take(indices), self.argnum)

    def __call__(self, flat: Any) -> Any:
        box, count = self.box, flat.shape[0]
        call = box.call_args(count, skip=self.argnum)
        call[self.argnum] = flat.reshape(count, *box.args[self.argnum].shape[1:])
        complex_input = flat.dtype.kind == "c"
        try:
            y = box.f(*call)
        except MemoryError:
            raise
        except Exception as err:
            if not complex_input:
                raise
            # f ran on real data already, so only complex input can have caused this (a
            # TypeError from math.sin, a RuntimeError from a PyTorch matmul of mixed dtypes).
            raise NotComplexSafeError(
                f"f does not accept complex input: {type(err).__name__}: {err}; use method='central'"
            ) from err
        if complex_input and _is_array(y) and getattr(getattr(y, "dtype", None), "kind", "c") == "f":
            self.real_for_complex = True
        return box._checked(y, count, complex_input).reshape(count, -1)


@dataclass(frozen=True)
class Plan:
    """How the Jacobian with respect to one argument is computed within memory:
    ``columns`` per pass of ``f``, ``check_samples`` per block of the checks."""

    columns: int
    check_samples: int


def _jacobian(box: BlackBox, argnum: int, method: str, plan: Plan, ops: Any, value: Any, bar: Any) -> Any:
    """``(B, *out_shape, *in_shape)``: the Jacobian of ``box`` with respect to one argument."""
    x = box.args[argnum]
    in_shape, n, m = x.shape[1:], _size(x.shape[1:]), box.out_size
    xp = namespace(x)
    J = xp.empty((box.batch, m, n), dtype=np.result_type(box.out_dtype, x.dtype))
    if J.size:
        flat, y = x.reshape(box.batch, n), value.reshape(box.batch, m)
        _by_sample_blocks(check_samples_independent, box, argnum, flat, y, None, plan.check_samples)
        h = steps(flat, method)
        g = box.of_argument(argnum)
        for start in range(0, n, plan.columns):
            stop = min(start + plan.columns, n)
            J[:, :, start:stop] = ops.difference_columns(
                g, flat, range(start, stop), h[:, start:stop], method
            )
            bar.update()
        if method == "complex-step":
            real = g.real_for_complex
            _by_sample_blocks(check_complex_safe, box, argnum, flat, y, J, plan.check_samples, real=real)
    return J.reshape(box.batch, *(box.out_shape or ()), *in_shape)


def _by_sample_blocks(
    check: Callable[..., None],
    box: BlackBox,
    argnum: int,
    flat: Any,
    y: Any,
    J: Any,
    block: int,
    **options: Any,
) -> None:
    """Run ``check`` on blocks of at most ``block`` samples (memory), naming samples by
    their index in the whole batch."""
    for start in range(0, box.batch, block):
        stop = min(start + block, box.batch)
        part = box.samples(start, stop).of_argument(argnum)
        check(part, flat[start:stop], y[start:stop], *(() if J is None else (J[start:stop],)),
              first_sample=start, **options)  # fmt: skip


def steps(x: Any, method: str) -> Any:
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


# --------------------------------------------------------------------------------------
# Checks: samples must not mix; complex-step needs a complex-safe f
# --------------------------------------------------------------------------------------


def _eps(*dtypes: DTypeLike | None) -> float:
    """The largest machine epsilon among the real parts of ``dtypes``."""
    return max(float(np.finfo(np.dtype(d)).eps) for d in dtypes)


def _random(xp: Any, seed: int, shape: Any, dtype: DTypeLike) -> Any:
    """Uniform ``[0, 1)`` numbers of ``dtype`` drawn on the device of ``xp``."""
    return xp.random.default_rng(seed).random(shape).astype(dtype)


def check_samples_independent(g: Callable[..., Any], x: Any, y: Any, *, first_sample: int = 0) -> None:
    """Raise ``ValueError`` if ``g``'s output for a sample moves when only others move.

    ``g``: ``(N, n) -> (N, m)``, ``x``: ``(P, n)`` samples with values ``y = g(x)``
    ``(P, m)``. One call of ``g`` on ``2P`` samples (the module docstring says what it
    finds); ``first_sample`` numbers the samples in the message.

    >>> import numpy as np
    >>> x = np.arange(6.0).reshape(3, 2)
    >>> check_samples_independent(lambda s: s - s.mean(axis=0), x, x - x.mean(axis=0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: f mixes samples: ...
    """
    xp = namespace(x)
    count = x.shape[0]
    eps = _eps(x.dtype, y.dtype)
    rho = eps ** (1 / 3)
    shift = rho * (0.5 + _random(xp, _SEED, x.shape, x.dtype)) * xp.maximum(xp.abs(x), 1)
    # Which copy moves each sample: a random half moves in the first; the first sample
    # always there, the last never, so couplings to either end are always seen.
    in_first = _random(xp, _SEED + 1, (count,), np.float64) < 0.5
    in_first[0] = True
    if count > 1:
        in_first[-1] = False
    first = xp.where(in_first[:, None], x + shift, x)
    second = xp.where(in_first[:, None], x, x + shift)
    out = g(xp.concatenate([first, second]))
    moved_copy = xp.where(in_first[:, None], out[:count], out[count:])
    still_copy = xp.where(in_first[:, None], out[count:], out[:count])
    moved = xp.abs(still_copy - y).max(axis=1)
    response = xp.abs(moved_copy - y).max(axis=1)
    response = xp.where(xp.isfinite(response), response, 0)  # f may be undefined a step away
    allowed = MIXING_ULPS * eps * (xp.abs(y).max(axis=1) + response / rho)
    excess = moved - allowed
    if bool((excess > 0).any()):  # NaN values give no verdict
        b = int(xp.argmax(xp.where(excess > 0, excess, -xp.inf)))
        raise ValueError(
            f"f mixes samples: its output for sample {first_sample + b} moved by {float(moved[b]):.3g} "
            f"(rounding allows {float(allowed[b]):.3g}) when only other samples of the batch moved, "
            "or when the batch grew; numerical methods evaluate f on stacks of perturbed copies of "
            "the batch, so f must map each sample on its own whatever else the batch holds "
            "(no x.mean(axis=0), batch normalisation or x[0]; compute such statistics outside f "
            "and bind them in a closure)"
        )


def check_complex_safe(
    g: ArgumentMap | Callable[..., Any], x: Any, y: Any, J: Any, *, first_sample: int = 0, real: bool = False
) -> None:
    """Raise :class:`NotComplexSafeError` unless the complex-step Jacobian ``J`` of ``g``
    agrees with central differences at every sample (see the module docstring).

    ``g``: ``(N, n) -> (N, m)``, ``x``: ``(P, n)``, ``y = g(x)``: ``(P, m)``, ``J``:
    ``(P, m, n)``. ``real`` says that ``g`` returned real data for complex input.

    >>> import numpy as np
    >>> x = np.array([[1.0, -2.0]])
    >>> check_complex_safe(np.abs, x, np.abs(x), np.zeros((1, 2, 2)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    batchjac.core.errors.NotComplexSafeError: f is not complex-safe: ...
    """
    xp = namespace(x)
    open_ = xp.arange(x.shape[0])  # samples without a verdict yet
    flagged = xp.zeros(x.shape[0], dtype=bool)  # a disagreement seen, no agreement yet
    worst: tuple[Any, ...] | None = None  # (sample, output, error, allowed) of the largest failure
    step = _eps(x.dtype, y.dtype) ** (1 / 3)
    for level in range(SAFETY_LEVELS):
        error, allowed, described = _safety_level(g if level == 0 else _take(g, open_), x[open_], y[open_],
                                                  J[open_], step, seed=_SEED + 2 + level)  # fmt: skip
        disagrees = described & (error > allowed)
        # A sample fails when some output disagrees along every direction (an accidental fit
        # of data that f's variation or noise make meaningless rarely happens twice); it
        # passes when the data judge it (some output described) and nothing disagrees; one
        # judged by no output, or along one direction only, stays open for a smaller step.
        failed = disagrees.any(axis=2).all(axis=0)
        passed = described.any(axis=(0, 2)) & ~disagrees.any(axis=(0, 2))
        flagged[open_[failed]] = True
        flagged[open_[passed]] = False
        if bool(failed.any()):
            excess = xp.where(disagrees, error - allowed, -xp.inf)
            k = int(xp.argmax(excess))
            r, p, i = (int(v) for v in np.unravel_index(k, excess.shape))
            worst = (int(open_[p]), i, float(error[r, p, i]), float(allowed[r, p, i]))
        open_ = open_[~passed]
        if not open_.size:
            break
        step /= SAFETY_STEP_RATIO
    if worst is None or not bool(flagged.any()):
        return
    if not bool(flagged[worst[0]]):  # report a sample that is flagged in the end
        b = int(xp.argmax(flagged))
        worst = (b, None, None, None)
    sample, output, error, allowed = worst
    where = f"sample {first_sample + sample}" + (
        "" if output is None else f", output {output} of the flattened sample"
    )
    by = (
        ""
        if error is None
        else f" by {error:.3g} where their truncation and rounding errors allow {allowed:.3g}"
    )
    real = real or getattr(g, "real_for_complex", False)
    returned = " (it returned real data for complex input)" if real else ""
    raise NotComplexSafeError(
        f"f is not complex-safe{returned}: at {where}, its complex-step Jacobian differs from "
        f"central differences along a random direction{by}, and no smaller step of the "
        f"{SAFETY_LEVELS} tried reconciled them; f drops imaginary parts (abs, .real, conj, a "
        "cast to float, a branch on x.real) or is not differentiable near x; use method='central'"
    )


def _take(g: Any, indices: Any) -> Any:
    """``g`` restricted to some samples: an :class:`ArgumentMap` selects its batched
    arguments; any other callable maps samples on their own already."""
    return g.take(indices) if isinstance(g, ArgumentMap) else g


def _fit_weights(steps: tuple[float, float, float]) -> dict[str, Any]:
    """The linear maps of the safety check's fits, for half differences at ``steps``.

    Odd part ``A(s) = s D + s^3 c``: ``D = wD . (A1, A2)``, ``c = wc . (A1, A2)``, the
    prediction of ``A3`` is ``wA . (A1, A2)``. Even part ``E(s) = s^2 a + s^4 b``: ``(a, b)``
    from ``(E1, E2)`` by ``Minv``, the prediction of ``E3`` is ``wE . (E1, E2)``. ``gamma_*``:
    the deviation of the odd miss, the even miss and ``D`` for unit noise in ``f``.
    """
    s1, s2, s3 = steps
    det = s1 * s2**3 - s2 * s1**3
    wD, wc = np.array([s2**3, -(s1**3)]) / det, np.array([-s2, s1]) / det
    wA = s3 * wD + s3**3 * wc
    Minv = np.linalg.inv(np.array([[s1**2, s1**4], [s2**2, s2**4]]))
    wE = np.array([s3**2, s3**4]) @ Minv
    return {
        "wD": wD, "wc": wc, "wA": wA, "Minv": Minv, "wE": wE,
        "gamma_odd": float(np.sqrt((1 + wA @ wA) / 2)),
        "gamma_even": float(np.sqrt((1 + wE @ wE) / 2 + (1 - wE.sum()) ** 2)),
        "gamma_D": float(np.sqrt(wD @ wD / 2)),
    }  # fmt: skip


# Steps in irrational ratios: f sampled at them cannot alias (look smooth while it
# oscillates with a period that divides the steps) at all three at once.
SAFETY_STEPS = (1.0, math.sqrt(3.0), math.pi)
_FIT = _fit_weights(SAFETY_STEPS)


def _safety_level(g: Any, x: Any, y: Any, J: Any, step: float, seed: int) -> tuple[Any, Any, Any]:
    """``(error, allowed, described)``, each ``(d, P, m)``: the complex-step Jacobian ``J``
    against central differences along ``d`` random directions per sample, at relative step
    ``step``.

    Along ``u`` (entries ``step * [0.5, 1.5] * max(1, |x|)``, random signs) the half
    differences ``A(s) = (f(x + s u) - f(x - s u)) / 2`` at the three ``SAFETY_STEPS``
    follow ``A(s) = s D + s^3 c + s^5 q + ...`` with ``D = J_true u``. ``D`` and ``c`` come
    from the first two; the fit's miss at the third is 64 times ``D``'s truncation error
    where ``f`` is smooth on the scale of ``u`` (its ``q`` term), and of the size of ``f``'s
    noise or of its variation where it is not. ``error = |D - J u|``; ``allowed`` is the
    larger of the miss and ``SAFETY_FACTOR`` times the rounding error (of ``f``'s values,
    ``eps (max |f| + |J| |x|)``, of the perturbations, ``(2 eps / step) |D|``, and the
    noise measured by the misses). ``described`` says where the data can judge: ``f`` is
    smooth on the scale of the step (the odd and the even part ``E(s) = (f(x + su) +
    f(x - su)) / 2 - f(x) = s^2 a + s^4 b`` dominated by their leading term, their fits
    predicting the third step within 1/``SAFETY_ASYMPTOTIC``), or it does not move along
    ``u`` beyond rounding.
    """
    xp = namespace(x)
    count, n = x.shape
    eps = _eps(x.dtype, y.dtype)
    shape = (SAFETY_DIRECTIONS, count, n)
    magnitude = 0.5 + _random(xp, seed, shape, x.dtype)
    sign = xp.where(_random(xp, seed + 100, shape, x.dtype) < 0.5, -1, 1).astype(x.dtype)
    u = x.dtype.type(step) * sign * magnitude * xp.maximum(xp.abs(x), 1)  # (d, P, n)
    scaled = [x.dtype.type(s) * u for s in SAFETY_STEPS]
    points = xp.stack([p for v in scaled for p in (x + v, x - v)])
    out = g(points.reshape(6 * SAFETY_DIRECTIONS * count, n)).reshape(3, 2, SAFETY_DIRECTIONS, count, -1)
    A = (out[:, 0] - out[:, 1]) / 2  # (3, d, P, m)
    E = (out[:, 0] + out[:, 1]) / 2 - y
    (d1, d2), (c1, c2), (p1, p2) = _FIT["wD"], _FIT["wc"], _FIT["wA"]
    derivative, cubic = d1 * A[0] + d2 * A[1], c1 * A[0] + c2 * A[1]
    miss = xp.abs(A[2] - p1 * A[0] - p2 * A[1])  # (d, P, m)
    (a1, a2), (b1, b2) = _FIT["Minv"]
    quadratic, quartic = xp.abs(a1 * E[0] + a2 * E[1]), xp.abs(b1 * E[0] + b2 * E[1])
    e1, e2 = _FIT["wE"]
    even_miss = xp.abs(E[2] - e1 * E[0] - e2 * E[1])
    error = xp.abs(derivative - _jacobian_times(J, u))
    # Rounding, per output: of f's values (absolute, down to the smallest normal number),
    # and of the perturbed inputs, amplified by f's slope along u (relative: eps / step).
    spread = _abs_jacobian_times(J, xp.abs(x))  # |J| |x|: (P, m)
    tiny = float(np.finfo(np.result_type(x.dtype, y.dtype)).tiny)
    slope = xp.abs(A[0])
    for k in (1, 2):
        slope = xp.maximum(slope, xp.abs(A[k]) / SAFETY_STEPS[k])
    rounding = eps * (xp.abs(out).max(axis=(0, 1)) + xp.abs(y) + spread) + tiny + (2 * eps / step) * slope
    # The misses also measure f's noise (hidden intermediates, quantisation); their median
    # over the sample's outputs and directions stands for it (a kink in one output does not
    # move the median).
    sigma = xp.concatenate([miss / _FIT["gamma_odd"], even_miss / _FIT["gamma_even"]], axis=2)
    sigma = xp.median(xp.moveaxis(sigma, 1, 0).reshape(count, -1), axis=1)[None, :, None]
    allowed = xp.maximum(miss, SAFETY_FACTOR * (rounding + _FIT["gamma_D"] * sigma))
    top = SAFETY_STEPS[2]
    odd_scale = xp.abs(derivative) * top / SAFETY_ASYMPTOTIC
    odd = (xp.maximum(miss, _FIT["gamma_odd"] * sigma) <= odd_scale) & (xp.abs(cubic) * top**3 <= odd_scale)
    even_scale = quadratic * top**2 / SAFETY_ASYMPTOTIC
    still = xp.abs(E).max(axis=0) <= SAFETY_FACTOR * rounding
    even = ((even_miss <= even_scale) & (quartic * top**4 <= even_scale)) | still
    flat = still & (xp.abs(A).max(axis=0) <= SAFETY_FACTOR * rounding)
    return error, allowed, (odd & even) | flat


def _jacobian_times(J: Any, u: Any) -> Any:
    """``J u`` per sample and direction: ``u`` ``(d, P, n)`` -> ``(d, P, m)``. ``J`` is
    ``(P, m, n)``, or a sparse stand-in with ``times`` (the colouring path's, which never
    builds the ``(m, n)`` matrix); either is indexed by samples (``J[indices]``)."""
    if hasattr(J, "times"):
        return J.times(u)
    return namespace(u).matmul(J[None], u[..., None])[..., 0]


def _abs_jacobian_times(J: Any, v: Any) -> Any:
    """``|J| v`` per sample: ``v`` ``(P, n)`` -> ``(P, m)`` (``J`` as in :func:`_jacobian_times`)."""
    if hasattr(J, "abs_times"):
        return J.abs_times(v)
    return namespace(v).matmul(namespace(v).abs(J), v[:, :, None])[:, :, 0]


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of a numerical Jacobian with respect to one argument, ``k`` columns a pass.

    ``jacobians``: every Jacobian of the call, ``(B, *out, *in_i)``, all alive at the end.
    ``workspace``: the value ``(B, *out)``, this argument's steps and flattened copy
    ``(B, *in)``. ``per_pass + k * per_column``: the stacked perturbations of ``x`` (complex
    for complex-step), the repeated batched extra arguments, copies of the shared ones and
    ``f``'s output, one block of ``B`` samples each per evaluation, plus the difference and
    quotient ``(B, m)`` of each column. ``per_check_sample``: the checks' arrays per sample
    (they run before and after the passes, on blocks of samples). ``f``'s own
    intermediates are not counted.
    """

    jacobians: int
    workspace: int
    per_pass: int
    per_column: int
    per_check_sample: int = 0

    def bytes(self, columns: int) -> int:
        return self.jacobians + self.workspace + self.per_pass + columns * self.per_column


def memory_estimate(
    box: BlackBox, argnum: int, argnums: tuple[int, ...], method: str, stored: dict[int, int] | None = None
) -> MemoryEstimate:
    """The :class:`MemoryEstimate` of the Jacobian of ``box`` with respect to ``args[argnum]``.

    ``stored``: the entries kept per sample of the Jacobian with respect to each argument,
    ``{argnum: count}`` (a sparse Jacobian's ``nnz``); None keeps all ``m n_i``.
    """
    x, batch, m = box.args[argnum], box.batch, box.out_size
    n = _size(x.shape[1:])

    def entries(i: int) -> int:
        return m * _size(box.args[i].shape[1:]) if stored is None else stored[i]

    stacked = np.result_type(x.dtype, np.complex64) if method == "complex-step" else x.dtype
    output = np.result_type(box.out_dtype, stacked)
    extras = sum(_nbytes(a) for i, (a, b) in enumerate(zip(box.args, box.batched)) if b and i != argnum)
    shared = sum(_nbytes(a) for a, b in zip(box.args, box.batched) if not b and _is_array(a))
    block = batch * (n * stacked.itemsize + m * output.itemsize) + extras
    jacobian_item = np.result_type(box.out_dtype, x.dtype).itemsize
    a, b = _BLOCKS[method]
    # The checks per sample, as measured with tracemalloc: the mixing check holds ~10 rows of
    # n and m entries; the complex-safety check ~28 d (d directions) and |J| (m n).
    real_item = max(x.dtype.itemsize, 8)
    if method == "complex-step":
        rows_in, rows_out, matrices = 32 * SAFETY_DIRECTIONS, 32 * SAFETY_DIRECTIONS, 1
    else:
        rows_in, rows_out, matrices = 12, 12, 0
    extras_per_sample = extras // max(batch, 1)
    per_check_sample = (
        real_item * (rows_in * n + rows_out * m + matrices * entries(argnum))
        + 4 * SAFETY_DIRECTIONS * extras_per_sample
    )
    return MemoryEstimate(
        jacobians=sum(batch * entries(i) * jacobian_item for i in argnums),
        workspace=batch * m * np.dtype(box.out_dtype).itemsize + 2 * _nbytes(x),
        per_pass=b * block + shared,
        per_column=a * block + 2 * batch * m * jacobian_item,
        per_check_sample=per_check_sample,
    )


def free_memory(x: Any) -> int | None:
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


def _plan(box: BlackBox, argnum: int, argnums: tuple[int, ...], method: str, chunk_size: int | None) -> Plan:
    """Columns per pass and samples per check block for ``args[argnum]``; ``MemoryError``
    before anything is allocated when the request does not fit in the free memory."""
    x = box.args[argnum]
    n = _size(x.shape[1:])
    estimate = memory_estimate(box, argnum, argnums, method)
    free = free_memory(x)
    columns = 1 if chunk_size is None else max(1, min(chunk_size, n))
    if free is not None and estimate.bytes(columns) > free:
        asked = "even one column at a time" if chunk_size is None else f"with chunk_size={chunk_size}"
        advice = "" if chunk_size is None or columns == 1 else "; use a smaller chunk_size, or None to fit"
        raise MemoryError(
            f"the {method} Jacobian with respect to argument {argnum} needs {estimate.bytes(columns):,} "
            f"bytes {asked}: {estimate.jacobians:,} for the Jacobians "
            f"(B, *out_shape, *in_shape) = {(box.batch, *(box.out_shape or ()), *x.shape[1:])}, and "
            f"{estimate.bytes(columns) - estimate.jacobians:,} for the value, the steps and one pass of f "
            f"(see batchjac.numerical.differences.MemoryEstimate); only {free:,} bytes are free on the "
            f"{device_of(x)}{advice}"
        )
    budget = FALLBACK_BUDGET if free is None else int(MEMORY_FRACTION * free)
    if chunk_size is None:
        fits = (budget - estimate.bytes(0)) // max(estimate.per_column, 1)
        columns = int(min(max(n, 1), max(fits, 1)))
    room = max(budget, estimate.bytes(columns)) - estimate.jacobians - estimate.workspace
    samples = room // max(estimate.per_check_sample, 1)
    return Plan(columns=columns, check_samples=int(min(max(box.batch, 1), max(samples, 1))))


# --------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:  # exceptions propagate
        pass

    def update(self, n: int = 1) -> None:
        pass


def _progress_bar(passes: int, progress: bool | None, label: str = "numerical Jacobian") -> Any:
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
        desc=label,
        unit="pass",
        file=sys.stderr,
        delay=0 if progress else PROGRESS_DELAY_S,
    )


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


# --------------------------------------------------------------------------------------
# Arguments and frameworks
# --------------------------------------------------------------------------------------


def _is_array(a: Any) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype") and hasattr(a, "ndim")


def _is_own_array(a: Any) -> bool:
    """NumPy and CuPy arrays: the ones batchjac copies before ``f`` sees them."""
    return isinstance(a, np.ndarray) or framework_of(a) == "cupy"


def _size(shape: Iterable[Any]) -> int:
    return math.prod(int(d) for d in shape)


def _nbytes(a: Any) -> int:
    """Bytes of ``a`` as a contiguous array (a broadcast view counts in full)."""
    return _size(a.shape) * a.dtype.itemsize


def _private(a: Any) -> Any:
    """A fresh copy of a NumPy/CuPy array (``f`` may write into it); anything else as it is."""
    return a.copy() if _is_own_array(a) else a


def _repeat(a: Any, reps: int) -> Any:
    """A fresh array of ``a`` repeated ``reps`` times along axis 0: ``(B, ...) -> (reps * B, ...)``."""
    xp = namespace(a)
    out = xp.empty((reps * a.shape[0], *a.shape[1:]), dtype=a.dtype)
    out.reshape(reps, *a.shape)[...] = a
    return out


def _in_framework(
    f: Callable[..., Any], args: tuple[Any, ...], f_framework: str | None
) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """``f`` as a function of NumPy/CuPy arrays, and ``args`` with PyTorch/JAX arrays taken
    as NumPy/CuPy views; ``f`` still receives arrays of its own framework (DLPack)."""
    found = {framework_of(a) for a in args} & set(_FOREIGN)
    if f_framework is None:
        if len(found) > 1:
            raise TypeError("args: expected arrays of one framework, got both PyTorch and JAX arrays")
        f_framework = next(iter(found), None)
    else:
        check_choice(f_framework, FRAMEWORKS, "f_framework")
    args = tuple(
        as_array(a, f"argument {i}") if framework_of(a) in _FOREIGN else a for i, a in enumerate(args)
    )
    if f_framework not in _FOREIGN:
        return f, args
    convert = _to_torch if f_framework == "torch" else _to_jax

    def f_in_framework(*arrays: Any) -> Any:
        return f(*(convert(a) if _is_own_array(a) else a for a in arrays))

    f_in_framework.__name__ = getattr(f, "__name__", "f")
    return f_in_framework, args


def _to_torch(a: Any) -> Any:
    import torch

    return torch.from_dlpack(a)


def _to_jax(a: Any) -> Any:
    import jax.numpy as jnp

    out = jnp.from_dlpack(a)
    if out.dtype != a.dtype:
        raise TypeError(
            f"f_framework='jax': JAX turned {a.dtype} into {out.dtype}, which would compute the "
            "Jacobian at a lower precision; enable 64-bit types (jax.config.update('jax_enable_x64', "
            "True)) or pass float32 data"
        )
    return out


def _batch_size(args: Sequence[Any], argnums: Sequence[int]) -> int:
    """The common leading length ``B`` of the differentiated arguments, checked."""
    for i in argnums:
        a = args[i]
        if not _is_array(a) or a.dtype.kind != "f":
            got = f"dtype {a.dtype}" if _is_array(a) else type(a).__name__
            raise TypeError(f"argument {i}: expected a real floating-point array (B, ...), got {got}")
    return common_batch([args[i] for i in argnums], [f"argument {i}" for i in argnums])
