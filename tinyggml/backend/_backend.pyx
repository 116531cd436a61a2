# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compile a Graph into a C plan and run it in one nogil call.

Plan(graph, max_threads) lays out every tensor (leafs and nodes) as a tg_tensor struct, binds
data pointers (external arrays for leafs, the arena for computed roots, root + offset for views)
and keeps the list of nodes that compute. run(n_threads) is the whole per-step cost in Python.
"""
from libc.stdlib cimport calloc, free
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memset

import numpy as np

from ..alloc import ALIGN, plan_memory
from ..ops import EMPTY_OPS, OPS, Op
from ..tensor import as_numpy

from .tg cimport (tg_tensor, tg_graph_compute, tg_simd_enabled, tg_attn_wide, tg_simd_compiled,
                 tg_int_gemm_compiled, tg_pack_supported, tg_packed_max_cols, tg_cpu_vendor, tg_amx_ready, tg_pack_rows, tg_max_threads,
                 tg_mul_mat_path, tg_type_info, tg_read_bandwidth, tg_time_now, tg_spin_ns,
                 TG_MAX_SRC, TG_MAX_PARAMS)


def simd_compiled():
    """True when the backend was built with AVX2+FMA+F16C kernels."""
    return bool(tg_simd_compiled())


def int_gemm_compiled():
    """The instruction set the integer panels multiply int16 activations with: "AVX-512 VNNI",
    "AVX2", or "" (the portable build). Which batches take them is a graph option
    (options.GraphOptions.int_gemm; GraphOptions.for_cpu() has the per-CPU default)."""
    return {2: "AVX-512 VNNI", 1: "AVX2"}.get(tg_int_gemm_compiled(), "")


def amx_available():
    """True when this build has the AMX integer GEMM (an AMX CPU, -march=native) and the kernel
    granted the process the tile state (asked once, here or at the first such product)."""
    return bool(tg_amx_ready())


def cpu_vendor():
    """"Intel", "AMD" or "" (another, or not x86), from cpuid: the AVX2 defaults differ
    (options.GraphOptions.for_cpu)."""
    return {1: "Intel", 2: "AMD"}.get(tg_cpu_vendor(), "")


def pack_supported(int type):
    """True when this build has the repacked 16-row dots for weights of `type` (kernels/repack.c:
    AVX-512 VNNI builds, Q4_0 / Q8_0 / Q4_K / Q6_K; AVX2 builds, Q4_0 / Q4_K)."""
    return bool(tg_pack_supported(type))


def packed_max_cols():
    """Batches under this many columns take the repacked dots on this build (mul_mat.c; at most
    ops.PACKED_MAX_COLS); 0 when it has none."""
    return tg_packed_max_cols()


def pack_rows(int type, data, int64_t K, int64_t M, int n_threads=1, out=None):
    """The M rows of K values (`type`, rows contiguous) in `data` repacked for the 16-row dots:
    into `out` (uint8, as many bytes) or a new array (kernels/repack.c has the layout)."""
    src = np.ascontiguousarray(np.asarray(data).reshape(-1).view(np.uint8))
    if out is None:
        out = np.empty(src.size, dtype=np.uint8)
    if out.dtype != np.uint8 or out.size != src.size or not out.flags.c_contiguous:
        raise ValueError(f"pack_rows: out must be {src.size} contiguous bytes")
    cdef const uint8_t *s = <const uint8_t *><size_t>_addr(src)
    cdef uint8_t *d = <uint8_t *><size_t>_addr(out)
    with nogil:
        tg_pack_rows(type, s, K, M, d, n_threads)
    return out


def type_traits():
    """{type id: (name, block size, bytes per block, quantized)} from the kernels' type table
    (kernels/quants.c), for checking tensor.TYPES against it."""
    cdef const char *name
    cdef int64_t blck, size
    cdef int quant
    out = {}
    for t in list(range(64)) + [1000, 1001]:
        if tg_type_info(t, &name, &blck, &size, &quant):
            out[t] = (name.decode(), int(blck), int(size), bool(quant))
    return out


MAX_SRC = TG_MAX_SRC
MAX_PARAMS = TG_MAX_PARAMS
MUL_MAT_PATHS = ("decode", "qdots", "qpanels", "small_f16", "panels", "tiles", "packed")   # enum tg_mm_path


def set_simd(bint enabled):
    """Use the SIMD kernels (True) or force the portable scalar path (False)."""
    global tg_simd_enabled
    tg_simd_enabled = 1 if enabled else 0


def simd_enabled():
    return bool(tg_simd_enabled) and bool(tg_simd_compiled())


def set_attn_wide(bint enabled) -> bool:
    """attn on SIMD builds: scores eight keys at a time and the value sums in registers (True,
    the default) or key by key (False); the value sums are the same bit for bit, the scores
    are summed in another order. Returns the previous setting (benchmarks alternate the two)."""
    global tg_attn_wide
    prev = bool(tg_attn_wide)
    tg_attn_wide = 1 if enabled else 0
    return prev


def set_barrier_spin(long ns):
    """How long (ns) a thread that finishes a node early spins before it sleeps until the others
    finish it (kernels/compute.c tg_barrier_wait); 0 sleeps at once."""
    global tg_spin_ns
    if ns < 0:
        raise ValueError(f"spin must be >= 0 ns, not {ns}")
    tg_spin_ns = ns


def barrier_spin():
    return tg_spin_ns


def openmp_max_threads():
    return tg_max_threads()


def measure_read_bandwidth(Py_ssize_t nbytes, int n_threads, int reps=5, int streams=4):
    """Best-of-reps streaming read bandwidth in bytes/s (benchmarks: the decode roofline), each
    thread reading its share as 4 streams side by side (as the decode dots do) or as 1.
    Python's wall clock is not used; 0.0 when built without OpenMP (no timer)."""
    if streams not in (1, 4):
        raise ValueError(f"streams must be 1 or 4, not {streams}")
    buf = np.ones(nbytes // 4, dtype=np.float32)
    cdef float sink = 0
    cdef float *p = <float *><size_t>_addr(buf)
    cdef Py_ssize_t n = buf.size
    with nogil:
        bw = tg_read_bandwidth(p, n, n_threads, reps, streams, &sink)
    return bw


cdef size_t _addr(arr) except? 0:
    return <size_t>arr.ctypes.data


cdef class Plan:
    cdef tg_tensor *tensors
    cdef tg_tensor **nodes
    cdef int n_tensors, n_nodes, max_threads
    cdef size_t wsize
    cdef object arena, work, graph, offsets, _index
    cdef readonly Py_ssize_t arena_bytes

    def __cinit__(self, graph, int max_threads=1):
        self.tensors = NULL
        self.nodes = NULL
        if max_threads < 1:
            raise ValueError("max_threads must be >= 1")
        self.graph = graph
        self.max_threads = max_threads
        offsets, size = plan_memory(graph.nodes)
        self.offsets = offsets
        self.arena_bytes = size
        raw = np.zeros(size + 2 * ALIGN, dtype=np.uint8)
        start = (-_addr(raw)) % ALIGN
        self.arena = raw[start:start + size + ALIGN]

        wsize = 0
        for t in graph.nodes:
            if t.op not in EMPTY_OPS:
                wsize = max(wsize, OPS[t.op].wsize(t))
        self.wsize = (wsize + ALIGN - 1) // ALIGN * ALIGN
        raw = np.zeros(self.wsize * max_threads + ALIGN, dtype=np.uint8)
        start = (-_addr(raw)) % ALIGN
        self.work = raw[start:]

        all_t = list(graph.leafs) + list(graph.nodes)
        index = {id(t): i for i, t in enumerate(all_t)}
        self._index = index
        self.n_tensors = len(all_t)
        self.tensors = <tg_tensor *>calloc(max(1, self.n_tensors), sizeof(tg_tensor))
        compute = [t for t in graph.nodes if t.op not in EMPTY_OPS]
        self.n_nodes = len(compute)
        self.nodes = <tg_tensor **>calloc(max(1, self.n_nodes), sizeof(tg_tensor *))
        if self.tensors == NULL or self.nodes == NULL:
            raise MemoryError()

        cdef tg_tensor *ct
        cdef size_t arena_base = _addr(self.arena)
        cdef size_t base
        for i, t in enumerate(all_t):
            ct = &self.tensors[i]
            ct.type = t.type
            ct.op = t.op
            for d in range(4):
                ct.ne[d] = t.ne[d]
                ct.nb[d] = t.nb[d]
            if len(t.src) > TG_MAX_SRC or len(t.op_params) > TG_MAX_PARAMS:
                raise ValueError(f"{t.name}: {len(t.src)} sources / {len(t.op_params)} params, "
                                 f"the backend takes {TG_MAX_SRC} / {TG_MAX_PARAMS}")
            for j, v in enumerate(t.op_params):
                ct.op_params[j] = v
            for j, s in enumerate(t.src):
                ct.src[j] = NULL if s is None else &self.tensors[index[id(s)]]
            root = t.root()
            if root.op == Op.NONE:
                if root.data is None:
                    raise ValueError(f"leaf {root.name} has no data")
                if root.data.nbytes < root.nbytes:
                    raise ValueError(f"leaf {root.name}: {root.data.nbytes} bytes, needs {root.nbytes}")
                base = _addr(root.data)
            else:
                base = arena_base + <size_t>offsets[id(root)]
            base += <size_t>t.view_offs
            ct.data = <char *>base
            ct.packed = 0
            if root is t and root.op == Op.NONE and root.packed is not None:
                ct.data = <char *><size_t>_addr(root.packed)   # a view reads the file layout
                ct.packed = 1
        for i, t in enumerate(compute):
            self.nodes[i] = &self.tensors[index[id(t)]]

    def __dealloc__(self):
        free(self.tensors)
        free(self.nodes)

    def run(self, int n_threads=1):
        """Execute every node: one nogil call, one OpenMP parallel region."""
        if n_threads < 1 or n_threads > self.max_threads:
            raise ValueError(f"n_threads must be in 1..{self.max_threads}")
        cdef char *w = <char *><size_t>_addr(self.work)
        with nogil:
            tg_graph_compute(self.nodes, self.n_nodes, n_threads, w, self.wsize, NULL)

    def profile(self, int n_threads=1):
        """Run once, returning [(node, seconds)] for every computing node (one barrier each)."""
        if n_threads < 1 or n_threads > self.max_threads:
            raise ValueError(f"n_threads must be in 1..{self.max_threads}")
        ends = np.zeros(max(1, self.n_nodes), dtype=np.float64)
        cdef double *e = <double *><size_t>_addr(ends)
        cdef char *w = <char *><size_t>_addr(self.work)
        cdef double t0
        with nogil:
            t0 = tg_time_now()
            tg_graph_compute(self.nodes, self.n_nodes, n_threads, w, self.wsize, e)
        starts = np.concatenate([[t0], ends[:len(ends) - 1]])
        compute = [t for t in self.graph.nodes if t.op not in EMPTY_OPS]
        return list(zip(compute, (ends[:self.n_nodes] - starts[:self.n_nodes]).tolist()))

    def set_rows(self, t, Py_ssize_t n):
        """Let the kernels see only the first n rows (ne[1]) of input leaf `t` from the next run
        on: an input sized for the most it can hold (the sequences of a ubatch, seq_info) is
        read as long as this run's content. Nothing else about the graph changes."""
        i = self._index.get(id(t))
        if i is None or t.op != Op.NONE or t.view_src is not None:
            raise ValueError(f"{t.name} is not an input leaf of this plan")
        if not 0 <= n <= t.ne[1]:
            raise ValueError(f"{t.name}: {n} rows, it has {t.ne[1]}")
        self.tensors[<int>i].ne[1] = n

    def mul_mat_path(self, t):
        """The kernel the backend runs for mul_mat node `t` now ("panels", "qdots", ...: the
        names of mul_mat.c's tg_mm_path; it depends on set_simd)."""
        if t.op != Op.MUL_MAT:
            raise ValueError(f"{t.name} is not a mul_mat")
        i = self._index.get(id(t))
        if i is None:
            raise ValueError(f"{t.name} is not in this plan")
        return MUL_MAT_PATHS[tg_mul_mat_path(&self.tensors[<int>i])]

    def numpy(self, t):
        """numpy view (reversed shape) of a tensor's current data."""
        root = t.root()
        if root.op == Op.NONE:
            return as_numpy(t, root.data)
        off = self.offsets[id(root)]
        return as_numpy(t, self.arena[off:])
