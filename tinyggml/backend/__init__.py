"""CPU backend: graphs compiled to C plans, run by OpenMP kernels (kernels/*.c)."""
from .. import ops as _ops
from .. import tensor as _tensor
from ._backend import (Plan, int_gemm_compiled, measure_read_bandwidth, openmp_max_threads, set_simd,
                       simd_compiled, simd_enabled)

__all__ = ["Plan", "set_simd", "simd_compiled", "simd_enabled", "int_gemm_compiled",
           "openmp_max_threads", "measure_read_bandwidth", "describe"]

import os as _os

# with the integer GEMM, quantized weights meet quantized activations at every batch size;
# on AVX2 (no VNNI) Q4_K batches measured faster on the float GEMM (its per-32 mins cost the
# integer tile more than widening the rows once per panel): mamba2-130m pp512 513 -> 566 t/s
_ops.QUANT_INT_GEMM = bool(int_gemm_compiled())
if int_gemm_compiled() == "AVX2":
    _ops.QUANT_FLOAT_GEMM_TYPES = frozenset({_tensor.Q4_K})

if _os.environ.get("TINYGGML_FORCE_SCALAR", "") not in ("", "0"):
    set_simd(False)


def describe() -> str:
    """One line on the kernels this build runs (for `info` and `bench`)."""
    if not simd_enabled():
        kernels = "portable scalar kernels" + ("" if simd_compiled() else " (built without AVX2)")
    else:
        kernels = "AVX2/FMA/F16C kernels"
        kernels += f", {int_gemm_compiled()} integer GEMM for quantized batches"
        if _ops.QUANT_FLOAT_GEMM_TYPES:
            names = ", ".join(sorted(_tensor.TYPE_NAME[t].upper() for t in _ops.QUANT_FLOAT_GEMM_TYPES))
            kernels += f" (float GEMM for {names})"
    return f"{kernels}; OpenMP, up to {openmp_max_threads()} threads"
