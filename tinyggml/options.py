"""GraphOptions: the choices a graph records that are not fixed by the model.

A graph is the same whatever machine builds it, except for what these options say: which
algorithm scans Mamba-2 prompts (and runs Qwen3.5's delta rule), whether quantized batches
multiply quantized (int16) activations on integer panels or float ones on widened rows, and how
long rows are blocked.
Nothing is read from the CPU at import: `GraphOptions.for_cpu()` gives the default for the
kernels this build runs, and a Model (or a test) passes what it wants.

Defaults per CPU (`tinyggml-cli info` prints the ones in use):
    AVX-512 VNNI     int_gemm=True: every quantized batch on the integer panels (vpdpwssd)
    AVX2 + FMA,      int_gemm=True: every quantized batch on the integer panels (vpmaddwd, 16 x 6
      Intel          tiles): 1.1-1.3x the float panels on long prompts (AVX2 code on a Xeon core)
    AVX2 + FMA,      int_gemm=False: quantized batches of int_gemm_min_cols+ columns on the
      AMD / other    float panels (rows widened once per panel), shorter ones on the integer
                     panels (vpmaddwd), where the widening is not amortized (measured on Zen 3,
                     where the integer tiles of the time only equalled the float ones)
    portable build   int_gemm=False (the integer dots and the scalar tiles)
On AMD CPUs with AVX-512 (Zen 4) the GEMM tiles stay in ymm registers: wide_gemm=False (the
chunked scans keep their 32-column zmm blocks).
With AMX (Sapphire Rapids and later, when the kernel grants the tile state) the integer panels'
products run on AMX tiles: amx=True, bit for bit the VNNI tiles. TINYGGML_AMX=0 turns it off.
TINYGGML_INT_GEMM=0|1 in the environment replaces the CPU's choice (to run one CPU's paths on
another, e.g. the test suite with the integer panels everywhere, as on AVX-512 VNNI).
The arithmetic differs between the two sides: the integer paths round each activation to int16
with one scale per 32 values (relative error up to 2^-16 of the block's largest value), the
float paths multiply the activations as they are.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

SCAN_ALGOS = {"auto": 0, "recurrent": 1, "chunked": 2}
SSD_CHUNK_MAX = 256          # the chunked scans' scratch grows with chunk^2


@dataclass(frozen=True)
class GraphOptions:
    # Mamba-2 ssm_scan and Qwen3.5's gated_delta: "chunked" (per chunk of tokens small dense
    # products: state-space duality, arXiv 2405.21060 sec. 6; the delta rule's WY form, arXiv
    # 2412.06464), "recurrent" (token by token), or "auto": chunked for sequences of at least
    # ssd_min_len (delta_min_len) tokens in the ubatch, recurrent below
    scan: str = "auto"
    ssd_chunk: int = 24      # 4 register tiles of 6 rows
    ssd_min_len: int = 8     # the crossover tools/bench_scan.py measures
    delta_chunk: int = 24    # 12-24 alike; 32+ slower (tools/bench_delta.py)
    delta_min_len: int = 8   # its crossover
    # quantized mul_mat: every batch on the integer panels (True), or only batches under
    # int_gemm_min_cols columns (False; wider ones on the float panels)
    int_gemm: bool = False
    int_gemm_min_cols: int = 48
    # the integer panels' products on AMX tiles (bit for bit the VNNI tiles; mul_mat.c), where
    # the build and the kernel allow them (otherwise the VNNI / AVX2 tiles run)
    amx: bool = False
    # the wider forms, bit for bit the narrower ones: on AVX-512 builds the GEMM tiles in zmm
    # (12 columns; 32 rows while two panels fill) and the chunked scans' 32-column blocks; on
    # AVX2 builds the integer GEMM's 16 x 6 tile (wide_gemm; the scans have no wider form)
    wide_gemm: bool = True
    wide_scan: bool = True
    # float panels: rows longer than mm_kblock_min_k times batches of mm_kblock_min_n+ columns
    # are multiplied in k blocks of mm_kc values (bit for bit the same sums; faster from L2)
    mm_kc: int = 1024
    mm_kblock_min_k: int = 2048
    mm_kblock_min_n: int = 256

    def __post_init__(self):
        if self.scan not in SCAN_ALGOS:
            raise ValueError(f"scan must be one of {', '.join(SCAN_ALGOS)}, got {self.scan!r}")
        for k in ("ssd_chunk", "delta_chunk"):
            if not 1 <= getattr(self, k) <= SSD_CHUNK_MAX:
                raise ValueError(f"{k} must be in 1..{SSD_CHUNK_MAX}, got {getattr(self, k)}")
        for k in ("ssd_min_len", "delta_min_len", "int_gemm_min_cols", "mm_kc", "mm_kblock_min_k",
                  "mm_kblock_min_n"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.mm_kc % 256:               # block edges on every weight type's block edges
            raise ValueError(f"mm_kc must be a multiple of 256, got {self.mm_kc}")

    @classmethod
    def for_cpu(cls, int_gemm_isa: str | None = None, vendor: str | None = None,
                **overrides) -> GraphOptions:
        """The default for the kernels this build runs (the table in the module docstring).
        `int_gemm_isa` ("AVX-512 VNNI", "AVX2" or "") and `vendor` ("Intel", "AMD" or "") stand
        in for the build's and the CPU's own, for tests."""
        amx, env = False, {}
        if int_gemm_isa is None:
            from .backend import amx_available, int_gemm_compiled, simd_enabled
            int_gemm_isa = int_gemm_compiled() if simd_enabled() else ""
            amx = simd_enabled() and amx_available()
            for name in ("TINYGGML_INT_GEMM", "TINYGGML_AMX"):
                if os.environ.get(name, "") not in ("", "0", "1"):
                    raise ValueError(f"{name} must be 0 or 1, got {os.environ[name]!r}")
            if os.environ.get("TINYGGML_AMX"):
                amx = amx and os.environ["TINYGGML_AMX"] == "1"
            if os.environ.get("TINYGGML_INT_GEMM"):
                env["int_gemm"] = os.environ["TINYGGML_INT_GEMM"] == "1"
        if vendor is None and int_gemm_isa:
            from .backend import cpu_vendor
            vendor = cpu_vendor()
        int_gemm = int_gemm_isa == "AVX-512 VNNI" or (int_gemm_isa == "AVX2" and vendor == "Intel")
        # Zen 4 runs a 512-bit multiply-add as two 256-bit halves: its zmm GEMM tiles measured
        # slower than the ymm ones (BENCHMARKS.md), where the scans' wider blocks, which save
        # loads, stay faster
        wide_gemm = not (int_gemm_isa == "AVX-512 VNNI" and vendor == "AMD")
        return replace(cls(int_gemm=int_gemm, amx=amx, wide_gemm=wide_gemm), **{**env, **overrides})

    def mm_kblock(self, K: int, N: int) -> int:
        """The k block of a float-panel mul_mat of rows of K values times N columns (0: none)."""
        return self.mm_kc if K > self.mm_kblock_min_k and N >= self.mm_kblock_min_n else 0

    def describe(self) -> str:
        q = ("integer GEMM for every quantized batch" if self.int_gemm else
             f"integer GEMM for quantized batches under {self.int_gemm_min_cols} columns, "
             f"float GEMM from there")
        if self.amx:
            q += " (AMX tiles)"
        elif not self.wide_gemm:
            q += " (narrow tiles)"
        blocks = "" if self.wide_scan else ", narrow blocks"
        return (f"{q}; Mamba-2 scan {self.scan} (chunks of {self.ssd_chunk} from {self.ssd_min_len} tokens{blocks}), "
                f"delta rule {self.scan} (chunks of {self.delta_chunk} from {self.delta_min_len}{blocks})")
