// The scalar vocabulary of batchjac's element-wise rules (rules_elementwise.SCALAR_FUNCTIONS)
// in CUDA C++: exp, log, log1p, expm1, sin, cos, tan, tanh, sqrt, erf, pow, fabs, fmax and
// fmin are CUDA's own float and double overloads (C99 meaning); `where` is the select below.
// Prepended to the generated element-wise source (batchjac/backends/cupy_kernels.py).

#pragma once

// where(c, a, b): a if c holds, else b. Both branches are evaluated (a rule may compute
// inf or NaN in the branch it discards); overloads, not a template, so that a mixed
// float/double call resolves by the usual promotion.
__device__ __forceinline__ float where(bool c, float a, float b) { return c ? a : b; }
__device__ __forceinline__ double where(bool c, double a, double b) { return c ? a : b; }
