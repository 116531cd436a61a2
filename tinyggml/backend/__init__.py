"""CPU backend: graphs compiled to C plans, run by OpenMP kernels (kernels/*.c)."""
from ._backend import (Plan, measure_read_bandwidth, openmp_max_threads, set_simd, simd_compiled,
                       simd_enabled)

__all__ = ["Plan", "set_simd", "simd_compiled", "simd_enabled", "openmp_max_threads",
           "measure_read_bandwidth"]

import os as _os

if _os.environ.get("TINYGGML_FORCE_SCALAR", "") not in ("", "0"):
    set_simd(False)
