"""Running a fused kernel: the value and Jacobians of a program in one pass per sample."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from batchjac.backends.cpu_kernels import pooled_empty, run_parallel
from batchjac.core.arrays import device_of
from batchjac.core.errors import BackendUnavailableError, DeviceMismatchError, NotFusableError
from batchjac.exact.fuse.cache import get_kernel
from batchjac.exact.fuse.codegen import CPU, CUDA, ELEMENTWISE, Signature
from batchjac.exact.fuse.lower import literal_operands
from batchjac.exact.fuse.plan import FusionDecision, lowered, plan_fusion
from batchjac.exact.ir import Program, Var
from batchjac.structured.types import Dense, Diagonal, Jacobian

# A CPU call with less work than this (operations over the batch, ~0.1-0.2 ms on one core)
# runs without threads: waking the thread pool costs tens of microseconds, milliseconds on
# a busy machine.
PARALLEL_WORK = 200_000
_CPU_BACKENDS = ("cpu", "numpy")
_GPU_BACKENDS = ("cuda", "numba", "cupy")


def fused_value_and_jacobians(
    program: Program,
    inputs: Sequence[Any],
    consts: Sequence[Any],
    wrt: Sequence[Var],
    batch: int,
    *,
    backend: str | None = None,
) -> tuple[Any, list[Jacobian], FusionDecision]:
    """``(value, [J w.r.t. each of wrt], decision)`` of ``program``'s output 0 by one fused
    kernel: value and Jacobian in one pass over each sample.

    ``inputs`` and ``consts`` are arrays, one per ``program.inputs`` / ``program.consts``
    (``program.const_values`` for the traced ones), batched ones ``(B, *shape)`` and shared
    ones per sample, as for :func:`batchjac.exact.interpret.jacobian.value_and_jacobians`;
    ``wrt`` lists program inputs. Results: ``value`` ``(B, *out_shape)`` (per sample when
    the output is shared by the batch) and each ``J`` a ``Dense`` ``(B, m, n)``, or a
    ``Diagonal`` ``(B, n)`` for an element-wise program; they live on the inputs' device.

    ``backend``: None (the inputs' device: NumPy arrays run a ``@njit(parallel=True)``
    kernel, GPU arrays a ``@cuda.jit`` one), ``"cpu"``/``"numpy"`` or
    ``"cuda"``/``"numba"``/``"cupy"`` (under ``NUMBA_ENABLE_CUDASIM=1`` the CUDA kernel runs
    on the simulator with NumPy arrays). The first call of a program compiles its kernel (a
    second or so), later calls and new processes reuse it (:mod:`batchjac.exact.fuse.cache`).

    Raises ``ValueError`` naming the reason when the program is not fusable
    (:func:`plan_fusion`'s ``reason``).

    >>> import numpy as np, batchjac as bj
    >>> x = np.array([[0.0, 1.0, 2.0]])
    >>> program = bj.trace(lambda x: np.sin(np.cumsum(x, axis=-1)), x)
    >>> value, (J,), decision = fused_value_and_jacobians(program, [x], program.const_values, program.inputs, 1)
    >>> np.allclose(J.to_dense()[0], np.cos(np.cumsum(x[0]))[:, None] * np.tri(3))
    True
    """
    _check_shapes(program, inputs, consts, batch)
    target = _target([*inputs, *consts], backend)
    decision = plan_fusion(program, wrt, batch, program.outputs[0].dtype, "gpu" if target == CUDA else "cpu")
    if not decision.fusable:
        raise NotFusableError(f"fused_value_and_jacobians: the program is not fusable: {decision.reason}")
    found = lowered(program, wrt)
    kernel = get_kernel(program, wrt, found, target)
    device = _Device(target, [*inputs, *consts])
    flat = found.mode == ELEMENTWISE
    arguments = _arguments(program, inputs, consts, kernel.signature, device, flat=flat)
    small = found.work * batch * (program.outputs[0].size if flat else 1) < PARALLEL_WORK
    function = kernel.serial if small and kernel.serial is not None else kernel.function
    run = _run_elementwise if flat else _run_samples
    value, jacobians = run(
        function, device, program.outputs[0], arguments, len(wrt), [v.size for v in wrt], batch
    )
    return value, jacobians, decision


def _arguments(
    program: Program,
    inputs: Sequence[Any],
    consts: Sequence[Any],
    signature: Signature,
    device: _Device,
    flat: bool,
) -> list:
    """The kernel's array arguments, in its order: batched ones ``(B, size)`` (flat: one
    axis), shared ones flat, the literals' values."""
    values = {("input", i): (a, v) for i, (a, v) in enumerate(zip(inputs, program.inputs))}
    values.update({("const", j): (a, v) for j, (a, v) in enumerate(zip(consts, program.consts))})
    found = []
    for argument in signature.arguments:
        if argument == ("lits",):
            literals = [program.equations[k].inputs[i].value for k, i in literal_operands(program)]
            found.append(device.literals(np.array(literals, dtype=np.float64)))
            continue
        a, var = values[argument]
        found.append(
            device.rows(a, var.dtype, var.size) if var.batched and not flat else device.flat(a, var.dtype)
        )
    return found


def _run_samples(
    function: Any,
    device: _Device,
    output: Var,
    arguments: list[Any],
    count_wrt: int,
    sizes: Sequence[int],
    batch: int,
) -> tuple[Any, list[Jacobian]]:
    """One sample per iteration (thread): ``y (B, m)``, ``J_i (B, m, n_i)``. An output shared
    by the batch is computed once per sample all the same (its Jacobians are per sample)."""
    count = batch if output.batched else max(batch, 1)
    m = output.size
    y = device.empty((count, m), output.dtype)
    jacobians = [device.empty((count, m, n), output.dtype) for n in sizes]
    device.run(function, count, [count, *arguments, y, *jacobians])
    value = y.reshape(count, *output.shape) if output.batched else y[0].reshape(output.shape)
    return value, [Dense(J[:batch]) for J in jacobians]


def _run_elementwise(
    function: Any,
    device: _Device,
    output: Var,
    arguments: list[Any],
    count_wrt: int,
    sizes: Sequence[int],
    batch: int,
) -> tuple[Any, list[Jacobian]]:
    """One entry per iteration (thread) over all ``B * n``: the value and each diagonal."""
    n = output.size
    total = batch * n
    y = device.empty((total,), output.dtype)
    diagonals = [device.empty((total,), output.dtype) for _ in range(count_wrt)]
    device.run(function, total, [total, n, *arguments, y, *diagonals])
    return y.reshape(batch, *output.shape), [Diagonal(d.reshape(batch, n)) for d in diagonals]


def _target(arrays: Sequence[Any], backend: str | None) -> str:
    devices = {device_of(a) for a in arrays if hasattr(a, "shape")}
    if len(devices) > 1:
        raise DeviceMismatchError(
            "fused_value_and_jacobians: the inputs and constants live on different devices; batchjac never "
            "copies between devices silently"
        )
    on_gpu = devices == {"gpu"}
    if backend is None:
        return CUDA if on_gpu else CPU
    if backend in _CPU_BACKENDS:
        if on_gpu:
            raise DeviceMismatchError(f"backend={backend!r} runs on the CPU but the inputs live on the GPU")
        return CPU
    if backend in _GPU_BACKENDS:
        from batchjac.kernels.numba_launch import simulated

        if not on_gpu and not simulated():
            raise DeviceMismatchError(
                f"backend={backend!r} runs on the GPU but the inputs are NumPy arrays on the CPU; move them "
                "with bj.to_device(x, 'gpu')"
            )
        return CUDA
    raise ValueError(
        f"backend: expected None, {', '.join(map(repr, _CPU_BACKENDS + _GPU_BACKENDS))}, got {backend!r}"
    )


def _check_shapes(program: Program, inputs: Sequence[Any], consts: Sequence[Any], batch: int) -> None:
    for label, variables, values in (("input", program.inputs, inputs), ("const", program.consts, consts)):
        if len(values) != len(variables):
            raise ValueError(
                f"fused_value_and_jacobians: expected {len(variables)} {label}s, got {len(values)}"
            )
        for i, (var, a) in enumerate(zip(variables, values)):
            expected = (batch, *var.shape) if var.batched else var.shape
            shape = tuple(getattr(a, "shape", np.shape(a)))
            if shape != tuple(expected):
                raise ValueError(
                    f"fused_value_and_jacobians: {label} {i} should have shape {expected}, got {shape}"
                )


class _Device:
    """Allocation, layout and launch on the kernel's target."""

    def __init__(self, target: str, arrays: Sequence[Any]):
        self.target = target
        self.xp = np
        self.numba_arrays = False
        self.stream = None
        if target == CUDA:
            gpu = [a for a in arrays if hasattr(a, "__cuda_array_interface__")]
            if gpu and type(gpu[0]).__module__.startswith("cupy"):
                import cupy

                self.xp = cupy
                self.stream = cupy.cuda.get_current_stream().ptr
            elif gpu:
                self.numba_arrays = True

    def _contiguous(self, a: Any, dtype: Any) -> Any:
        if self.numba_arrays:
            if a.dtype != dtype:
                raise TypeError(
                    f"fused_value_and_jacobians: a numba device array of dtype {a.dtype}, expected {dtype}"
                )
            return a
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def rows(self, a: Any, dtype: Any, size: int) -> Any:
        """A batched array as ``(B, size)``."""
        a = self._contiguous(a, dtype)
        return a.reshape(a.shape[0], size)

    def flat(self, a: Any, dtype: Any) -> Any:
        return self._contiguous(a, dtype).reshape(-1)

    def literals(self, values: npt.NDArray[np.float64]) -> Any:
        """The literals' values on the kernel's device (a copy of the program's numbers, not of
        the caller's data)."""
        if self.target == CPU or (self.xp is np and not self.numba_arrays):
            return values
        if self.numba_arrays:
            from numba import cuda

            return cuda.to_device(values)
        return self.xp.asarray(values)

    def empty(self, shape: Any, dtype: Any) -> Any:
        if self.numba_arrays:
            from numba import cuda

            return cuda.device_array(shape, dtype=dtype)
        if self.xp is np:
            return pooled_empty(shape, dtype)
        return self.xp.empty(shape, dtype=dtype)

    def run(self, kernel: Any, count: int, args: list[Any]) -> None:
        if self.target == CPU:
            run_parallel(kernel, *args)
            return
        try:
            from batchjac.kernels.numba_fused import launch
        except ImportError as err:  # pragma: no cover - numba without its CUDA target
            raise BackendUnavailableError(f"the fused CUDA kernels need numba-cuda ({err})") from err
        launch(kernel, count, args, self.stream)
