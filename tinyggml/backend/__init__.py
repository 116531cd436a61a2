"""CPU backend: graphs compiled to C plans, run by OpenMP kernels (kernels/*.c)."""
from .. import ops as _ops
from ._backend import (Plan, int_gemm_compiled, measure_read_bandwidth, openmp_max_threads, set_simd,
                       simd_compiled, simd_enabled)

__all__ = ["Plan", "set_simd", "simd_compiled", "simd_enabled", "int_gemm_compiled",
           "openmp_max_threads", "measure_read_bandwidth", "describe"]

import os as _os

# with the integer GEMM, quantized weights meet quantized activations at every batch size
_ops.QUANT_INT_GEMM = bool(int_gemm_compiled())

if _os.environ.get("TINYGGML_FORCE_SCALAR", "") not in ("", "0"):
    set_simd(False)


def describe() -> str:
    """One line on the kernels this build runs (for `info` and `bench`)."""
    if not simd_enabled():
        kernels = "portable scalar kernels" + ("" if simd_compiled() else " (built without AVX2)")
    else:
        kernels = "AVX2/FMA/F16C kernels"
        kernels += f", {int_gemm_compiled()} integer GEMM for quantized batches"
    return f"{kernels}; OpenMP, up to {openmp_max_threads()} threads"
