"""The CuPy backend's CUDA C, checked without a GPU.

The element-wise kernels are generated from each rule's scalar form: the generated source
must carry every expression of the rule and compile, for float and double, with the
compilers at hand: NVRTC (what CuPy compiles with, from the ``nvidia-cuda-nvrtc`` wheel or
a CUDA toolkit) and ``nvcc``. The static kernels of ``kernels/`` compile with both too.
Each compiler part skips cleanly where that compiler is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from batchjac import kernels
from batchjac.backends import cupy_kernels
from batchjac.core.elementwise_rules import BINARY, SCALAR_FUNCTIONS, UNARY, ElementwiseRule

RULES = sorted(name for name, r in {**UNARY, **BINARY}.items() if r.scalar is not None)
KERNELS_DIR = Path(kernels.__file__).parent


def test_every_builtin_rule_has_a_scalar_form():
    assert sorted({**UNARY, **BINARY}) == RULES


@pytest.mark.parametrize("name", RULES)
def test_generated_function_carries_each_expression_of_the_rule(name):
    found = {**UNARY, **BINARY}[name]
    source = cupy_kernels.elementwise_function(name)
    outputs = cupy_kernels.output_names(found)
    for out, expression in zip(outputs, found.scalar):
        translated = cupy_kernels.translate(expression, tuple(found.params) + ("x", "u", "v", "y"), name)
        assert f"{out} = {translated};" in source
        # the translation only wraps numbers: strip the wrappers and the rule's text is back
        assert re.sub(r"Real\(([^()]*)\)", r"\1", translated) == expression
    for param in found.params:
        assert f"const Real {param}" in source
    assert source.index("    y = ") < source.index("    d_")  # the value first: derivatives read y


def test_translate_wraps_numbers_and_keeps_names():
    assert cupy_kernels.translate("exp(-0.5 * x) + 1e-3 * y", ("x", "y"), "t") == (
        "exp(-Real(0.5) * x) + Real(1e-3) * y"
    )
    assert cupy_kernels.translate("log1p(x) + expm1(x)", ("x",), "t") == "log1p(x) + expm1(x)"


def test_translate_refuses_names_outside_the_scalar_vocabulary():
    with pytest.raises(ValueError, match=r"elementwise 'bad': the scalar form uses 'cbrt'"):
        cupy_kernels.translate("cbrt(x)", ("x",), "elementwise 'bad'")


def test_the_value_expression_cannot_read_y(monkeypatch):
    monkeypatch.setitem(UNARY, "selfish", ElementwiseRule("selfish", 1, scalar=("y + x", "1.0")))
    with pytest.raises(ValueError, match=r"uses 'y'"):
        cupy_kernels.elementwise_function("selfish")


def test_a_rule_without_scalar_form_has_no_kernel(monkeypatch):
    monkeypatch.setitem(UNARY, "opaque", ElementwiseRule("opaque", 1, None, user=True))
    with pytest.raises(ValueError, match=r"elementwise 'opaque': the rule has no scalar form"):
        cupy_kernels.elementwise_function("opaque")


def test_a_scalar_form_with_the_wrong_number_of_expressions_is_refused(monkeypatch):
    monkeypatch.setitem(BINARY, "half", ElementwiseRule("half", 2, scalar=("u * v", "v")))
    with pytest.raises(ValueError, match=r"has 2 expressions, expected 3"):
        cupy_kernels.elementwise_function("half")


def test_the_math_header_defines_where_for_float_and_double():
    header = kernels.source(cupy_kernels.MATH_HEADER)
    assert "float where(bool c, float a, float b)" in header
    assert "double where(bool c, double a, double b)" in header
    assert "where" in SCALAR_FUNCTIONS


def test_every_structured_kernel_is_a_template_of_structured_cu():
    source = kernels.source(cupy_kernels.STRUCTURED_SOURCE)
    for kernel in cupy_kernels.STRUCTURED_KERNELS:
        assert f"__global__ void {kernel}(" in source
    assert cupy_kernels.name_expressions()[:2] == ["scale_rows<float>", "scale_rows<double>"]


# --------------------------------------------------------------------------------------
# Compilation: every generated function and every structured kernel, float and double
# --------------------------------------------------------------------------------------


def _elementwise_check_source(names):
    """What CuPy's ElementwiseKernel compiles, per rule and dtype: ``typedef <ctype> T;``,
    the rule's preamble, and a kernel calling the device function on ``T`` values."""
    parts = []
    for name in names:
        found = {**UNARY, **BINARY}[name]
        inputs = (*cupy_kernels.argument_names(found), *found.params)
        outputs = cupy_kernels.output_names(found)
        for ctype in cupy_kernels.CTYPES.values():
            params = ", ".join([f"const {ctype}* {a}" for a in inputs] + [f"{ctype}* {o}" for o in outputs])
            call = ", ".join([f"{a}[i]" for a in inputs] + [f"{o}[i]" for o in outputs])
            parts.append(
                f'extern "C" __global__ void check_{name}_{ctype}({params}, int size)\n'
                "{\n    typedef " + ctype + " T;\n"
                "    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < size; i += blockDim.x * gridDim.x)\n"
                f"        {cupy_kernels.function_name(name)}<T>({call});\n}}\n"
            )
    functions = "\n".join(cupy_kernels.elementwise_function(name) for name in names)
    return kernels.source(cupy_kernels.MATH_HEADER) + "\n" + functions + "\n" + "\n".join(parts)


def _structured_check_source():
    """``structured.cu`` with every instantiation the RawModule asks for (nvcc has no name
    expressions: taking each template's address instantiates it)."""
    takes = "\n".join(f"    (void)&{expr};" for expr in cupy_kernels.name_expressions())
    return kernels.source(cupy_kernels.STRUCTURED_SOURCE) + f"\nvoid instantiate_all()\n{{\n{takes}\n}}\n"


def _nvrtc():
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as err:  # CuPy absent, or no libnvrtc
        pytest.skip(f"NVRTC is not usable here: {err}")
    return nvrtc


def _nvrtc_compile(source, filename, name_expressions=()):
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(source, filename, [], [])
    for expr in name_expressions:
        nvrtc.addNameExpression(program, expr)
    try:
        nvrtc.compileProgram(program, ["-arch=compute_90"])
    except nvrtc.NVRTCError as err:
        pytest.fail(f"NVRTC failed on {filename}: {err}\n{nvrtc.getProgramLog(program)}")
    return [nvrtc.getLoweredName(program, expr) for expr in name_expressions]


def _nvcc_compile(source, tmp_path, filename):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH")
    path = tmp_path / filename
    path.write_text(source)
    done = subprocess.run(
        [nvcc, "-arch=sm_90", "--ptx", "-I", str(KERNELS_DIR), str(path), "-o", str(tmp_path / "out.ptx")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"nvcc failed on {filename}:\n{done.stderr}"
    return (tmp_path / "out.ptx").read_text()


def test_generated_elementwise_kernels_compile_with_nvrtc():
    _nvrtc_compile(_elementwise_check_source(RULES), "elementwise.cu")


def test_generated_elementwise_kernels_compile_with_nvcc(tmp_path):
    ptx = _nvcc_compile(_elementwise_check_source(RULES), tmp_path, "elementwise.cu")
    for name in RULES:
        assert f"check_{name}_float" in ptx and f"check_{name}_double" in ptx


def test_structured_kernels_compile_with_nvrtc_for_every_name_expression():
    lowered = _nvrtc_compile(
        kernels.source(cupy_kernels.STRUCTURED_SOURCE), "structured.cu", cupy_kernels.name_expressions()
    )
    assert len(set(lowered)) == len(cupy_kernels.name_expressions())


def test_structured_kernels_compile_with_nvcc(tmp_path):
    ptx = _nvcc_compile(_structured_check_source(), tmp_path, "structured_check.cu")
    assert ptx.count(".entry") == len(cupy_kernels.name_expressions())


def test_math_header_compiles_with_nvcc(tmp_path):
    source = '#include "batchjac_math.cuh"\n__global__ void k(float* f, double* d)\n{ f[0] = where(f[0] > 0.0f, f[0], 0.0f); d[0] = where(d[0] > 0.0, d[0], 0.0); }\n'
    _nvcc_compile(source, tmp_path, "header_check.cu")
