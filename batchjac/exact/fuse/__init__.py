"""One kernel per function: traced programs compiled into fused numba kernels (CPU and CUDA).

The structured chain (:mod:`batchjac.exact.interpret.jacobian`) runs one array pass per
primitive and keeps every intermediate and local Jacobian in memory; for many small
per-sample Jacobians (kinematics, small Newton systems, element-wise chains) that memory
traffic and the per-primitive overhead dominate. This package compiles a program instead
into one numba kernel that computes, per sample, the value and the Jacobian in registers:

- :mod:`~batchjac.exact.fuse.lower`: the program as scalar code, one local per entry, each
  with its structural partial derivatives (element-wise rules from their scalar forms;
  moves through their index maps; reductions, products, softmax, small det/inv/solve);
- :mod:`~batchjac.exact.fuse.codegen`: forward mode with the tangents' static sparsity, or
  reverse mode (one adjoint sweep carrying all output rows), or a flat element-wise loop
  (diagonal Jacobians); the same body compiled for ``@njit(parallel=True)`` and ``@cuda.jit``;
- :mod:`~batchjac.exact.fuse.plan`: whether to fuse (:func:`plan_fusion`);
- :mod:`~batchjac.exact.fuse.cache`: kernels cached in memory and on disk;
- :func:`fused_value_and_jacobians`: run one.
"""

from batchjac.exact.fuse.fused import fused_value_and_jacobians
from batchjac.exact.fuse.plan import FusionDecision, plan_fusion

__all__ = ["FusionDecision", "fused_value_and_jacobians", "plan_fusion"]
