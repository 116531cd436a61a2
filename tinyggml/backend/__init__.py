"""CPU backend: graphs compiled to C plans, run by OpenMP kernels (kernels/*.c).

Importing it changes nothing elsewhere: the choices a graph records are GraphOptions
(tinyggml/options.py), whose per-CPU default reads int_gemm_compiled() and cpu_vendor() here.
"""
import os as _os

from ._backend import (MAX_PARAMS, MAX_SRC, MUL_MAT_PATHS, Plan, amx_available, barrier_spin,
                       cpu_vendor,
                       int_gemm_compiled, measure_read_bandwidth, openmp_max_threads, pack_rows,
                       pack_supported, packed_max_cols, set_attn_wide, set_barrier_spin, set_simd,
                       simd_compiled, simd_enabled, type_traits)

__all__ = ["Plan", "set_simd", "simd_compiled", "simd_enabled", "int_gemm_compiled", "cpu_vendor",
           "amx_available",
           "openmp_max_threads", "measure_read_bandwidth", "set_barrier_spin", "barrier_spin",
           "pack_rows", "pack_supported", "packed_max_cols", "set_attn_wide", "type_traits", "describe",
           "MAX_SRC",
           "MAX_PARAMS",
           "MUL_MAT_PATHS"]

if _os.environ.get("TINYGGML_FORCE_SCALAR", "") not in ("", "0"):
    set_simd(False)
if _os.environ.get("TINYGGML_SPIN_NS"):        # for measuring the barrier (BENCHMARKS.md)
    set_barrier_spin(int(_os.environ["TINYGGML_SPIN_NS"]))


def describe(options=None) -> str:
    """One line on the kernels this build runs, and with `options` the paths a model's graphs
    take (for `info` and `bench`)."""
    if not simd_enabled():
        kernels = "portable scalar kernels" + ("" if simd_compiled() else " (built without AVX2)")
    else:
        kernels = "AVX2/FMA/F16C kernels"
        if int_gemm_compiled():
            kernels += f", {int_gemm_compiled()} integer panels" + (" (AMX tiles)" if amx_available() else "")
        if pack_supported(14):                      # Q6_K (and Q4_0, Q8_0, Q4_K): kernels/repack.c
            kernels += ", repacked 16-row VNNI decode dots"
        elif pack_supported(2):                     # Q4_0 and Q4_K: AVX2 builds
            kernels += ", repacked 16-row Q4_0 / Q4_K decode dots"
    line = f"{kernels}; OpenMP, up to {openmp_max_threads()} threads"
    return line if options is None else f"{line}; {options.describe()}"
