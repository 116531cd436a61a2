"""CPU backend: graphs compiled to C plans, run by OpenMP kernels (kernels/*.c)."""
from .. import ops as _ops
from ._backend import (Plan, int_gemm_compiled, measure_read_bandwidth, mm_kblock, openmp_max_threads,
                       set_simd, simd_compiled, simd_enabled)

__all__ = ["Plan", "set_simd", "simd_compiled", "simd_enabled", "int_gemm_compiled",
           "openmp_max_threads", "measure_read_bandwidth", "mm_kblock", "describe"]

import os as _os

# with the integer GEMM on, quantized weights meet quantized activations at every batch size.
# On AVX2 alone (no VNNI) the float GEMM on rows widened once per 16-row panel measured faster
# (Zen 3, pp512 one process alternated: mamba2-130m Q4_0 547 -> 601, Q8_0 538 -> 599, mamba-130m
# Q4_0 509 -> 558 t/s), so there it stays off: prompts of ops.QUANT_GEMM_MIN_ROWS (48) tokens or
# more multiply float activations, shorter batches still take the integer panels.
_ops.QUANT_INT_GEMM = int_gemm_compiled() == "AVX-512 VNNI"
# the float panels' k blocking, from the kernels themselves: ops.py sizes their scratch by it
_ops.MM_KBLOCK = mm_kblock()

if _os.environ.get("TINYGGML_FORCE_SCALAR", "") not in ("", "0"):
    set_simd(False)


def describe() -> str:
    """One line on the kernels this build runs (for `info` and `bench`)."""
    if not simd_enabled():
        kernels = "portable scalar kernels" + ("" if simd_compiled() else " (built without AVX2)")
    else:
        kernels = "AVX2/FMA/F16C kernels"
        if _ops.QUANT_INT_GEMM:
            kernels += f", {int_gemm_compiled()} integer GEMM for quantized batches"
        else:
            kernels += f", float GEMM for quantized batches of {_ops.QUANT_GEMM_MIN_ROWS}+"
            if int_gemm_compiled():
                kernels += f" ({int_gemm_compiled()} integer GEMM under {_ops.QUANT_GEMM_MIN_ROWS})"
    return f"{kernels}; OpenMP, up to {openmp_max_threads()} threads"
