"""Every op declared once: builder (shape rule), numpy float64 reference, scratch size.

Builders only record: they check the shape rule, create the result tensor and set `op`, `src`
and `op_params` (ggml's `ggml_add_impl` pattern). The numpy `ref` is the spec the C kernels in
backend/kernels/*.c are tested against. Op ids match `enum tg_op` in backend/kernels/tg.h.

Reference arrays are 4-D numpy views in reversed order: a tensor {ne0, ne1, ne2, ne3} is an
array of shape (ne3, ne2, ne1, ne0).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable

import numpy as np

from .options import SCAN_ALGOS, GraphOptions
from .tensor import F16, F32, I32, Q6_K, QACT, QACT_K, QUANTIZED, WEIGHT_TYPES, Tensor


class Op(IntEnum):
    NONE = 0
    VIEW = 1
    CPY = 2
    GET_ROWS = 3
    MUL_MAT = 4
    ADD = 5
    MUL = 6
    SCALE = 7
    SILU = 8
    RMS_NORM = 9
    CONCAT = 10
    SSM_CONV = 11
    SSM_SCAN = 12
    GATE_SILU = 13
    QUANTIZE = 14
    ROPE = 15
    KV_STORE = 16
    ATTN = 17
    RELU_SQR = 18
    GATE_SIGMOID = 19
    GATED_DELTA = 20


@dataclass(frozen=True)
class OpDef:
    name: str
    ref: Callable | None                      # numpy float64 reference: (dst, *src arrays) -> array
    wsize: Callable[[Tensor], int] = lambda t: 0   # scratch bytes per thread


class ShapeError(ValueError):
    """A builder was called with shapes its op does not accept (a bug in a model definition)."""


def _check(cond, msg):
    if not cond:
        raise ShapeError(msg)


def _f32_bits(x: float) -> int:
    return struct.unpack("<i", struct.pack("<f", float(x)))[0]


def _bits_f32(i: int) -> float:
    return struct.unpack("<f", struct.pack("<i", int(i)))[0]


def _new(type, ne, op, src, op_params=()):
    return Tensor(type, ne, op=int(op), src=src, op_params=op_params)


# ---- views: metadata only -------------------------------------------------------------------
def view(a: Tensor, ne, nb, offset: int = 0) -> Tensor:
    """A view of `a` with shape `ne`, byte strides `nb`, starting `offset` bytes into `a`."""
    ne = list(ne) + [1] * (4 - len(ne))
    nb = list(nb)
    while len(nb) < 4:
        nb.append(nb[-1] * ne[len(nb) - 1])
    t = Tensor(a.type, ne, nb=nb, op=Op.VIEW, src=(a,), view_src=a, view_offs=offset,
               name=f"{a.name} (view)" if a.name else "")
    _check(t.view_offs + t.nbytes <= a.root().nbytes, f"view out of bounds of {a.root().name}")
    return t


def reshape(a: Tensor, *ne) -> Tensor:
    _check(a.is_contiguous(), "reshape needs a contiguous tensor (use cont)")
    _check(int(np.prod(ne)) == a.nelements, f"reshape {a.ne} -> {ne}: element count differs")
    t = Tensor(a.type, ne)
    return view(a, t.ne, t.nb, 0)


def permute(a: Tensor, ax0: int, ax1: int, ax2: int, ax3: int) -> Tensor:
    """ggml_permute: dim i of `a` becomes dim ax_i of the result."""
    axes = (ax0, ax1, ax2, ax3)
    _check(sorted(axes) == [0, 1, 2, 3], f"bad permutation {axes}")
    ne, nb = [0] * 4, [0] * 4
    for i, ax in enumerate(axes):
        ne[ax], nb[ax] = a.ne[i], a.nb[i]
    return view(a, ne, nb, 0)


def transpose(a: Tensor) -> Tensor:
    return permute(a, 1, 0, 2, 3)


# ---- compute ops ----------------------------------------------------------------------------
def cont(a: Tensor) -> Tensor:
    """A contiguous copy of `a`."""
    _check(a.type == F32, "cont: F32 only")
    return _new(F32, a.ne, Op.CPY, (a,))


def cpy(a: Tensor, b: Tensor) -> Tensor:
    """Copy `a` into `b` (a view, e.g. of a state); the result aliases `b`."""
    _check(a.type == F32 and b.type == F32 and a.ne == b.ne, f"cpy {a.ne} -> {b.ne}")
    t = Tensor(b.type, b.ne, nb=b.nb, op=Op.CPY, src=(a,), view_src=b.root(),
               view_offs=b.view_offs)
    return t


# Q6_K weights times fewer columns than this take QACT_K activations (int16 split into int8
# halves: vpmaddubsw on the raw 6-bit weights, no widening; the LM head of Q4_0 / Q4_K files
# decoding); from here the integer panels take them (the kernels' MM_NR, mul_mat.c)
QUANT_PANEL_MIN_COLS = 6
# Repacked Q4_0 / Q8_0 / Q4_K / Q6_K weights times fewer columns than this take the 16-row dots
# (repacked Q6_K with QACT_K columns), PACKED_PASS columns at a time: mul_mat.c's PACKED_MAX_N,
# PACKED_PASS (AVX2 builds stop sooner: backend.packed_max_cols()). A column then gets what it
# gets alone, so batched decode equals one by one.
PACKED_MAX_COLS = 80
PACKED_PASS = 32
DEFAULT_OPTIONS = GraphOptions()


def get_rows(a: Tensor, ids: Tensor) -> Tensor:
    # a: {ne0, n_rows} F32|F16|BF16|quantized, ids: {n} I32 => {ne0, n}
    _check(a.type in WEIGHT_TYPES and a.ne[2] == a.ne[3] == 1 and a.rows_contiguous(), "get_rows: a")
    _check(ids.type == I32 and ids.ndim == 1 and ids.is_contiguous(), "get_rows: ids {n} I32")
    return _new(F32, (a.ne[0], ids.ne[0]), Op.GET_ROWS, (a, ids))


def mul_mat(a: Tensor, b: Tensor, opts: GraphOptions = DEFAULT_OPTIONS) -> Tensor:
    # a: {K, M, ne02, ne03}, b: {K, N, ne12, ne13} => {M, N, ne12, ne13}
    _check(a.ne[0] == b.ne[0], f"mul_mat: K differs {a.ne} @ {b.ne}")
    _check(b.ne[2] % a.ne[2] == 0 and b.ne[3] % a.ne[3] == 0, "mul_mat: cannot broadcast")
    _check(a.type in WEIGHT_TYPES and a.rows_contiguous(), "mul_mat: a's type, rows contiguous")
    _check(b.type == F32 and b.rows_contiguous(), "mul_mat: b F32, rows contiguous")
    n_cols = b.ne[1] * b.ne[2] * b.ne[3]
    kc, amx = 0, 0
    if a.type in QUANTIZED and (opts.int_gemm or n_cols < opts.int_gemm_min_cols):
        # integer dots or panels: the activations are quantized once, by their own node (as
        # ggml does with vec_dot_type), then every weight row meets the QACT rows. Otherwise
        # the weight rows are widened to F32 once per panel for the float GEMM.
        split = a.type == Q6_K and (n_cols < QUANT_PANEL_MIN_COLS or
                                    (a.root().packed is not None and n_cols < PACKED_MAX_COLS))
        b = _new(QACT_K if split else QACT, b.ne, Op.QUANTIZE, (b,))
        amx = int(opts.amx and not split)       # the integer panels on AMX tiles (mul_mat.c)
    else:
        kc = opts.mm_kblock(a.ne[0], b.ne[1])
    return _new(F32, (a.ne[1], b.ne[1], b.ne[2], b.ne[3]), Op.MUL_MAT, (a, b),
                (kc, amx, int(opts.wide_gemm)))


def _binary(a, b, op):
    _check(a.type == F32 and b.type == F32, "binary ops: F32")
    _check(all(n % m == 0 for n, m in zip(a.ne, b.ne)), f"cannot broadcast {b.ne} to {a.ne}")
    return _new(F32, a.ne, op, (a, b))


def add(a: Tensor, b: Tensor) -> Tensor:
    return _binary(a, b, Op.ADD)


def mul(a: Tensor, b: Tensor) -> Tensor:
    return _binary(a, b, Op.MUL)


def scale(a: Tensor, s: float) -> Tensor:
    _check(a.type == F32, "scale: F32")
    return _new(F32, a.ne, Op.SCALE, (a,), (_f32_bits(s),))


def silu(a: Tensor) -> Tensor:
    _check(a.type == F32, "silu: F32")
    return _new(F32, a.ne, Op.SILU, (a,))


def gate_silu(y: Tensor, z: Tensor) -> Tensor:
    """y * silu(z): the Mamba output gate."""
    _check(y.type == F32 and z.type == F32 and y.ne == z.ne, f"gate_silu {y.ne} vs {z.ne}")
    return _new(F32, y.ne, Op.GATE_SILU, (y, z))


def gate_sigmoid(y: Tensor, z: Tensor) -> Tensor:
    """y * sigmoid(z): the output gate of Qwen3.5's attention layers (z may be a strided view)."""
    _check(y.type == F32 and z.type == F32 and y.ne == z.ne, f"gate_sigmoid {y.ne} vs {z.ne}")
    return _new(F32, y.ne, Op.GATE_SIGMOID, (y, z))


def relu_sqr(a: Tensor) -> Tensor:
    """max(a, 0)^2: the squared-ReLU MLP activation (Nemotron-H)."""
    _check(a.type == F32, "relu_sqr: F32")
    return _new(F32, a.ne, Op.RELU_SQR, (a,))


def rms_norm(a: Tensor, eps: float, weight: Tensor | None = None, gate: Tensor | None = None) -> Tensor:
    """Per row of ne0: g / sqrt(mean(g^2) + eps), g = a, or a * silu(gate) with a gate of a's
    shape; times `weight` (broadcast over rows as mul's) when given. One pass for what would be
    gate_silu, rms_norm and mul, with the same arithmetic."""
    _check(a.type == F32 and a.rows_contiguous(), "rms_norm: F32 with contiguous rows")
    if weight is not None:
        _check(weight.type == F32 and weight.rows_contiguous() and weight.ne[0] == a.ne[0]
               and all(n % m == 0 for n, m in zip(a.ne, weight.ne)),
               f"rms_norm: weight {weight.ne} does not broadcast over the rows of {a.ne}")
    if gate is not None:
        _check(gate.type == F32 and gate.rows_contiguous() and gate.ne == a.ne,
               f"rms_norm: gate {gate.ne} is not {a.ne} (F32, contiguous rows)")
    return _new(F32, a.ne, Op.RMS_NORM, (a, weight, gate), (_f32_bits(eps),))


def concat(a: Tensor, b: Tensor, dim: int) -> Tensor:
    _check(a.type == F32 and b.type == F32 and 0 <= dim < 4, "concat: F32")
    _check(all(a.ne[i] == b.ne[i] for i in range(4) if i != dim), f"concat {a.ne} {b.ne} dim {dim}")
    ne = list(a.ne)
    ne[dim] += b.ne[dim]
    return _new(F32, ne, Op.CONCAT, (a, b), (dim,))


def ssm_conv(x: Tensor, state: Tensor, w: Tensor, bias: Tensor | None, seq_info: Tensor,
             apply_silu: bool = True) -> Tensor:
    # x: {ch, n_t}, state: {d_conv-1, ch, n_slots}, w: {d_conv, ch}, bias: {ch},
    # seq_info: {3, n_s} I32 (slot, first token, n tokens) => {ch, n_t}
    ch, d_conv = x.ne[0], w.ne[0]
    _check(x.type == F32 and x.rows_contiguous() and x.ne[2] == 1, "ssm_conv: x {ch, n_t}")
    _check(w.ne[:2] == (d_conv, ch) and w.is_contiguous() and w.type == F32 and 2 <= d_conv <= 16,
           f"ssm_conv: w {w.ne} for {ch} channels")
    _check(state.ne[:2] == (d_conv - 1, ch) and state.is_contiguous(), f"ssm_conv: state {state.ne}")
    _check(bias is None or (bias.ne[0] == ch and bias.is_contiguous()), "ssm_conv: bias {ch}")
    _check(seq_info.type == I32 and seq_info.ne[0] == 3 and seq_info.is_contiguous(), "seq_info")
    return _new(F32, (ch, x.ne[1]), Op.SSM_CONV, (x, state, w, bias, seq_info), (int(apply_silu),))


def ssm_scan(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
             D: Tensor | None, seq_info: Tensor, opts: GraphOptions = DEFAULT_OPTIONS) -> Tensor:
    # state: {d_state, head_dim, n_head, n_slots}, x: {head_dim, n_head, n_t}, dt: {n_head, n_t},
    # A: {d_state | 1, n_head}, B, C: {d_state, n_group, n_t}, D: {n_head} => y {head_dim, n_head, n_t}
    # opts.scan picks the algorithm for a scalar A per head (Mamba-2); with A per state element
    # (Mamba-1) the scan always recurs token by token
    algo, chunk = (opts.scan if A.ne[0] == 1 else "recurrent"), opts.ssd_chunk
    ds, hd, nh = state.ne[:3]
    n_t, ng = x.ne[2], B.ne[1]
    _check(state.is_contiguous() and state.type == F32, "ssm_scan: state contiguous F32")
    _check(x.ne[:3] == (hd, nh, n_t) and x.rows_contiguous(), f"ssm_scan: x {x.ne}")
    _check(dt.ne[:2] == (nh, n_t) and dt.rows_contiguous(), f"ssm_scan: dt {dt.ne}")
    _check(A.ne[:2] in ((ds, nh), (1, nh)) and A.is_contiguous(), f"ssm_scan: A {A.ne}")
    for t, n in ((B, "B"), (C, "C")):
        _check(t.ne[:3] == (ds, ng, n_t) and t.rows_contiguous(), f"ssm_scan: {n} {t.ne}")
    _check(ng >= 1 and nh % ng == 0, "ssm_scan: n_head must be a multiple of n_group")
    _check(all(nb % 4 == 0 for t in (x, dt, B, C) for nb in t.nb), "ssm_scan: strides of whole floats")
    _check(D is None or (D.ne[0] == nh and D.is_contiguous()), "ssm_scan: D {n_head}")
    _check(seq_info.type == I32 and seq_info.ne[0] == 3, "seq_info")
    return _new(F32, (hd, nh, n_t), Op.SSM_SCAN, (state, x, dt, A, B, C, D, seq_info),
                (SCAN_ALGOS[algo], chunk, opts.ssd_min_len, int(opts.wide_scan)))


def gated_delta(state: Tensor, q: Tensor, k: Tensor, v: Tensor, alpha: Tensor, b: Tensor,
                A: Tensor, dt_bias: Tensor, seq_info: Tensor, eps: float = 1e-6,
                opts: GraphOptions = DEFAULT_OPTIONS) -> Tensor:
    """The gated delta rule (Qwen3.5's linear attention), token by token over each sequence,
    the state updated in place. Per value head h (its key head h % n_k_heads: the converter
    writes the value heads in that tiled order) and token:
        q, k  <- x / sqrt(sum(x^2) + eps) (L2 norm), q / sqrt(d_k)
        decay  = exp(A[h] * softplus(alpha[h] + dt_bias[h]))      A = -exp(A_log) < 0
        beta   = sigmoid(b[h])
        S      = decay * S;   S_j += k * beta * (v_j - S_j . k);   y_j = S_j . q
    where S_j is row j of the head's d_v x d_k state (one row per value channel).

    state {d_k, d_v, n_v_heads, n_slots}, q, k {d_k, n_k_heads, n_t} (rows contiguous), v {d_v,
    n_v_heads, n_t}, alpha, b {n_v_heads, n_t}, A, dt_bias {n_v_heads} => y {d_v, n_v_heads, n_t}
    opts.scan picks token by token or chunks of opts.delta_chunk tokens (the same recurrence
    regrouped: sums in another order)."""
    dk, dv, nh = state.ne[:3]
    n_t, nk = q.ne[2], q.ne[1]
    _check(state.type == F32 and state.is_contiguous(), "gated_delta: state contiguous F32")
    for t_, n in ((q, "q"), (k, "k")):
        _check(t_.type == F32 and t_.ne[:3] == (dk, nk, n_t) and t_.nb[0] == 4, f"gated_delta: {n} {t_.ne}")
    _check(v.type == F32 and v.ne[:3] == (dv, nh, n_t) and v.nb[0] == 4, f"gated_delta: v {v.ne}")
    _check(nk >= 1 and nh % nk == 0, "gated_delta: value heads must be a multiple of key heads")
    for t_, n in ((alpha, "alpha"), (b, "b")):
        _check(t_.type == F32 and t_.ne[:2] == (nh, n_t) and t_.nb[0] == 4, f"gated_delta: {n} {t_.ne}")
    for t_, n in ((A, "A"), (dt_bias, "dt_bias")):
        _check(t_.type == F32 and t_.nelements == nh and t_.is_contiguous(), f"gated_delta: {n} {t_.ne}")
    _check(all(nb % 4 == 0 for t_ in (q, k, v, alpha, b) for nb in t_.nb), "gated_delta: strides of whole floats")
    _check(seq_info.type == I32 and seq_info.ne[0] == 3 and seq_info.is_contiguous(), "seq_info")
    return _new(F32, (dv, nh, n_t), Op.GATED_DELTA, (state, q, k, v, alpha, b, A, dt_bias, seq_info),
                (_f32_bits(eps), SCAN_ALGOS[opts.scan], opts.delta_chunk, opts.delta_min_len,
                 int(opts.wide_scan)))


# ---- attention ----------------------------------------------------------------------------
ROPE_NORM, ROPE_NEOX = 0, 2          # ggml's rope modes (GGUF models: llama_model_rope_type)


def rope(x: Tensor, pos: Tensor, n_rot: int, mode: int, freq_base: float,
         freq_scale: float = 1.0) -> Tensor:
    """Rotary position embedding of the first n_rot values of each head: pairs (2i, 2i+1)
    (ROPE_NORM, llama) or (i, i + n_rot/2) (ROPE_NEOX) turn by pos * freq_scale *
    freq_base^(-2i/n_rot). x: {head_dim, n_head, n_t} with rows of whole floats; pos: {n_t} I32
    (each token's position in its sequence) => {head_dim, n_head, n_t}, contiguous."""
    hd, nh, n_t = x.ne[:3]
    _check(x.type == F32 and x.nb[0] == 4 and x.ne[3] == 1, f"rope: x {x.ne} F32 rows")
    _check(0 < n_rot <= hd and n_rot % 2 == 0, f"rope: n_rot {n_rot} for head_dim {hd}")
    _check(mode in (ROPE_NORM, ROPE_NEOX), f"rope: mode {mode}")
    _check(pos.type == I32 and pos.ne[0] == n_t and pos.is_contiguous(), "rope: pos {n_t} I32")
    return _new(F32, (hd, nh, n_t), Op.ROPE, (x, pos),
                (n_rot, mode, _f32_bits(freq_base), _f32_bits(freq_scale)))


def kv_store(cache: Tensor, x: Tensor, seq_info: Tensor, pos: Tensor) -> Tensor:
    """Write each token's keys (or values) into its sequence's cache at its position:
    cache[:, :, pos[i], slot(i)] = x[:, :, i]. cache: {head_dim, n_kv, n_ctx, n_slots} F32 | F16
    (a STATE leaf or a view of one with rows of whole cells: any head / position strides), x: {head_dim, n_kv, n_t} F32, seq_info {3, n_s} (slot, first token, n tokens),
    pos {n_t} I32. The result is the cache itself (readers depend on it: written first)."""
    hd, nkv, n_t = x.ne[:3]
    _check(cache.type in (F32, F16) and cache.rows_contiguous() and cache.ne[:2] == (hd, nkv),
           f"kv_store: cache {cache.ne} for rows {x.ne}")
    _check(x.type == F32 and x.nb[0] == 4 and x.ne[3] == 1, f"kv_store: x {x.ne}")
    _check(seq_info.type == I32 and seq_info.ne[0] == 3, "seq_info")
    _check(pos.type == I32 and pos.ne[0] == n_t and pos.is_contiguous(), "kv_store: pos {n_t} I32")
    return Tensor(cache.type, cache.ne, nb=cache.nb, op=Op.KV_STORE, src=(x, seq_info, pos, cache),
                  view_src=cache.root(), view_offs=cache.view_offs)


def attn(q: Tensor, k: Tensor, v: Tensor, seq_info: Tensor, pos: Tensor, scale: float) -> Tensor:
    """Causal attention of each token over its own sequence's cache, positions 0..pos[i]:
    softmax(scale * q . K^T) V, grouped-query (query head h reads kv head h / (n_head/n_kv)).
    One pass over the keys in blocks with a running max (flash attention): no score matrix.
    q: {head_dim, n_head, n_t} (rows of whole floats), k, v: caches {head_dim, n_kv, n_ctx,
    n_slots} F32 | F16 (kv_store's results) => {head_dim, n_head, n_t}."""
    hd, nh, n_t = q.ne[:3]
    nkv = k.ne[1]
    _check(q.type == F32 and q.nb[0] == 4 and q.ne[3] == 1, f"attn: q {q.ne}")
    for t, n in ((k, "k"), (v, "v")):
        _check(t.type in (F32, F16) and t.rows_contiguous() and t.ne[0] == hd and t.ne[1] == nkv
               and all(nb % t.nb[0] == 0 for nb in t.nb[1:]), f"attn: {n} cache {t.ne} for q {q.ne}")
    _check(k.ne == v.ne and k.nb == v.nb and k.type == v.type, "attn: k and v caches differ")
    _check(nkv >= 1 and nh % nkv == 0, f"attn: {nh} heads over {nkv} kv heads")
    _check(seq_info.type == I32 and seq_info.ne[0] == 3, "seq_info")
    _check(pos.type == I32 and pos.ne[0] == n_t and pos.is_contiguous(), "attn: pos {n_t} I32")
    return _new(F32, (hd, nh, n_t), Op.ATTN, (q, k, v, seq_info, pos), (_f32_bits(scale),))


# ---- numpy references (float64) -------------------------------------------------------------
def _silu(x):
    return x / (1.0 + np.exp(-x))


def _softplus(x):
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def _ref_mul_mat(t, a, b):
    r2, r3 = b.shape[1] // a.shape[1], b.shape[0] // a.shape[0]
    a = np.repeat(np.repeat(a, r3, axis=0), r2, axis=1)
    return b @ np.swapaxes(a, -1, -2)


def _ref_rows(a, b, f):
    reps = [n // m for n, m in zip(a.shape, b.shape)]
    return f(a, np.tile(b, reps))


def _ref_rms_norm(t, a, w=None, z=None):
    if z is not None:
        a = a * _silu(z)
    out = a / np.sqrt(np.mean(a * a, axis=-1, keepdims=True) + _bits_f32(t.op_params[0]))
    return out if w is None else _ref_rows(out, w, np.multiply)


def _ref_ssm_conv(t, x, state, w, bias, info):
    x, state, w = x[0, 0], state[0], w[0, 0]          # (n_t, ch), (n_slots, ch, dc-1), (ch, dc)
    out = np.zeros_like(x)
    dc = w.shape[1]
    for slot, t0, n in info[0, 0].astype(np.int64):
        win = np.concatenate([state[slot], x[t0:t0 + n].T], axis=1)   # (ch, dc-1+n)
        for i in range(n):
            out[t0 + i] = np.sum(win[:, i:i + dc] * w, axis=1)
        if bias is not None:
            out[t0:t0 + n] += bias.reshape(-1)
        state[slot] = win[:, n:n + dc - 1]
    if t.op_params[0]:
        out = _silu(out)
    return out[None, None]


def _ref_ssm_scan(t, state, x, dt, A, B, C, D, info):
    # state (n_slots, nh, hd, ds); x (n_t, nh, hd); dt (n_t, nh); A (nh, ds|1); B, C (n_t, ng, ds)
    x, dt, A, B, C = x[0], dt[0, 0], A[0, 0], B[0], C[0]
    nh, ng = x.shape[1], B.shape[1]
    g = np.arange(nh) // (nh // ng)
    y = np.zeros_like(x)
    for slot, t0, n in info[0, 0].astype(np.int64):
        s = state[slot]
        for i in range(t0, t0 + n):
            d = _softplus(dt[i])                                 # (nh,)
            dA = np.exp(d[:, None] * A)                          # (nh, ds | 1)
            s[...] = s * dA[:, None, :] + (x[i] * d[:, None])[:, :, None] * B[i][g][:, None, :]
            y[i] = np.einsum("hpn,hn->hp", s, C[i][g])
            if D is not None:
                y[i] += D.reshape(-1)[:, None] * x[i]
    return y[None]


def _ref_gated_delta(t, state, q, k, v, alpha, b, A, dt_bias, info):
    # state (n_slots, nh, dv, dk); q, k (n_t, nk, dk); v (n_t, nh, dv); alpha, b (n_t, nh)
    eps = _bits_f32(t.op_params[0])
    q, k, v, alpha, b = q[0], k[0], v[0], alpha[0, 0], b[0, 0]
    A, dt_bias = A.reshape(-1), dt_bias.reshape(-1)
    nh, nk, dk = v.shape[1], q.shape[1], q.shape[2]
    kh = np.arange(nh) % nk
    y = np.zeros_like(v)
    for slot, t0, n in info[0, 0].astype(np.int64):
        S = state[slot]
        for i in range(t0, t0 + n):
            qi = q[i][kh] / np.sqrt((q[i][kh] ** 2).sum(-1, keepdims=True) + eps) / np.sqrt(dk)
            ki = k[i][kh] / np.sqrt((k[i][kh] ** 2).sum(-1, keepdims=True) + eps)
            decay = np.exp(A * _softplus(alpha[i] + dt_bias))            # (nh,)
            beta = 1.0 / (1.0 + np.exp(-b[i]))
            S *= decay[:, None, None]
            delta = (v[i] - np.einsum("hjd,hd->hj", S, ki)) * beta[:, None]
            S += delta[:, :, None] * ki[:, None, :]
            y[i] = np.einsum("hjd,hd->hj", S, qi)
    return y[None]


def _ref_rope(t, x, pos):
    n_rot, mode = t.op_params[0], t.op_params[1]
    base, fscale = _bits_f32(t.op_params[2]), _bits_f32(t.op_params[3])
    x = x[0]                                                          # (n_t, nh, hd)
    theta = pos.reshape(-1)[:, None] * fscale * base ** (-np.arange(0, n_rot, 2) / n_rot)
    c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]       # (n_t, 1, n_rot/2)
    out = x.copy()
    if mode == ROPE_NORM:
        i0, i1 = slice(0, n_rot, 2), slice(1, n_rot, 2)
    else:
        i0, i1 = slice(0, n_rot // 2), slice(n_rot // 2, n_rot)
    out[..., i0] = x[..., i0] * c - x[..., i1] * s
    out[..., i1] = x[..., i0] * s + x[..., i1] * c
    return out[None]


def _ref_kv_store(t, x, info, pos, cache):
    out = cache.copy()                                    # (n_slots, n_ctx, nkv, hd)
    x = x[0]                                              # (n_t, nkv, hd)
    if t.type == F16:
        x = x.astype(np.float16).astype(np.float64)
    pos = pos.reshape(-1)
    for slot, t0, n in info[0, 0].astype(np.int64):
        out[slot, pos[t0:t0 + n]] = x[t0:t0 + n]
    return out


def _ref_attn(t, q, k, v, info, pos):
    q = q[0]                                              # (n_t, nh, hd)
    nh, nkv = q.shape[1], k.shape[2]
    scale = _bits_f32(t.op_params[0])
    pos = pos.reshape(-1)
    out = np.zeros_like(q)
    for slot, t0, n in info[0, 0].astype(np.int64):
        for i in range(t0, t0 + n):
            K = np.repeat(k[slot, :pos[i] + 1], nh // nkv, axis=1)      # (n_k, nh, hd)
            V = np.repeat(v[slot, :pos[i] + 1], nh // nkv, axis=1)
            s = np.einsum("hd,khd->hk", q[i], K) * scale
            p = np.exp(s - s.max(axis=1, keepdims=True))
            out[i] = np.einsum("hk,khd->hd", p / p.sum(axis=1, keepdims=True), V)
    return out[None]


def _attn_wsize(t):
    hd, nh = t.src[0].ne[:2]
    rows = ATTN_TILE * (nh // t.src[1].ne[1])             # query rows of one work item
    return 4 * (rows * (hd + 2) + ATTN_ROWS * ATTN_KBLOCK + 2 * ATTN_KBLOCK * hd) + 64


ATTN_TILE, ATTN_KBLOCK = 8, 64        # tokens per attention work item, keys per block (attn.c)
ATTN_ROWS = 4                         # query rows of one token taken together (attn.c)


def _ref_quantize(t, x):
    """What the QACT rows hold: per 32 values d = amax/32767, q = round(x/d) (float32 math);
    QACT_K rows: the same per 256 values with d = amax/32639 (hi and lo halves stay int8)."""
    n, qmax = (256, 32639) if t.type == QACT_K else (32, 32767)
    x32 = x.astype(np.float32).reshape(-1, n)
    d = np.abs(x32).max(axis=1, keepdims=True) / np.float32(qmax)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = np.clip(np.rint(x32 * inv), -qmax, qmax)
    return (q * d).astype(np.float64).reshape(x.shape)


def _mm_wsize(t):
    a, b = t.src
    unpacked = a.ne[0] + a.ne[0] // 2         # K int8 + K/16 scales + K/16 mins
    if a.type in QUANTIZED:                   # + 4 repacked rows gathered (mul_mat.c), and for
        unpacked += 4 * a.nb[1]               # the packed dots the columns' split bytes, a pass's
        n = b.ne[1] if b.ne[1] < PACKED_MAX_COLS else 0       # float lanes and outputs (repack.c)
        unpacked += (2 * a.ne[0] + a.ne[0] // 8) * n + 64 + 4 * 272 * min(n, PACKED_PASS)
    if b.type == QACT_K:                          # Q6_K columns: fused dots (or the packed ones)
        return unpacked + 64
    if a.type in QUANTIZED and b.type == QACT:    # + two integer panels and the rows (mul_mat.c
        panels = 3 * 16 * 2 * a.ne[0] + 4 * 4 * a.ne[0] + unpacked + 64      # tg_mul_mat_qpanels)
        if t.op_params[1]:                        # AMX: the columns packed, per block of 16: hi
            nb = -(-b.ne[1] // 16)                # and lo bytes, scales, half sums (tg_mul_mat_amx)
            panels += 40 * a.ne[0] * nb + 3 * a.ne[0] + a.nb[1] + 128
        return panels
    # batches: two packed panels of 16 rows, 16 widened rows, the activations packed by 6 columns
    # (of one k block, op_params[0]), a partial panel's sums, the unpack scratch (mul_mat.c
    # tg_mul_mat_panels; the scalar path uses a panel of 32 widened rows in the same space)
    kc = t.op_params[0] if 0 < t.op_params[0] < a.ne[0] else a.ne[0]
    n_pad = -(-b.ne[1] // 6) * 6
    packed_b = n_pad * 4 * (kc + 16) if b.ne[1] > 1 else 0
    return 3 * 16 * 4 * a.ne[0] + packed_b + unpacked + 64     # (two panels: the 32-row tiles)


def _scan_wsize(t):
    ds, hd = t.src[0].ne[:2]
    recurrent = ds * 16                                   # Mamba-1: states and A for 8 lanes
    if t.src[3].ne[0] != 1 or t.op_params[0] == SCAN_ALGOS["recurrent"]:
        return recurrent * 4
    L = (t.op_params[1] + 7) // 8 * 8                     # chunk, padded to whole vectors
    n_chunks = -(-t.src[1].ne[2] // t.op_params[1])       # of the longest sequence: all tokens
    chunked = -(-ds * hd // 8) * 8 + ds * L + L * L + L * hd + 5 * L + n_chunks * L * L   # tg_ssd_heads
    return max(recurrent, chunked) * 4 + 64


def _delta_wsize(t):
    dk, dv = t.src[0].ne[:2]
    recurrent = 2 * dk                                    # the token's normalized q and k
    if t.op_params[1] == SCAN_ALGOS["recurrent"]:
        return recurrent * 4 + 64
    L = (t.op_params[2] + 7) // 8 * 8
    chunked = -(-dk * dv // 8) * 8 + 3 * L * dk + 2 * L * L + 3 * L * dv + L * L + 6 * L   # gd_chunked
    return max(recurrent, chunked) * 4 + 64


def _conv_wsize(t):
    x, w = t.src[0], t.src[2]
    return w.ne[0] * (x.ne[0] + 8) * 4        # the weights of a thread's channels, transposed


OPS: dict[int, OpDef] = {
    Op.NONE: OpDef("none", None),
    Op.VIEW: OpDef("view", None),
    Op.CPY: OpDef("cpy", lambda t, a: a),
    Op.GET_ROWS: OpDef("get_rows", lambda t, a, ids: a[0, 0][ids.reshape(-1).astype(np.int64)][None, None],
                       wsize=lambda t: 0 if t.src[0].type in (F32, F16) else 2 * t.src[0].ne[0] + t.src[0].nb[1]),
    Op.MUL_MAT: OpDef("mul_mat", _ref_mul_mat, wsize=_mm_wsize),
    Op.ADD: OpDef("add", lambda t, a, b: _ref_rows(a, b, np.add)),
    Op.MUL: OpDef("mul", lambda t, a, b: _ref_rows(a, b, np.multiply)),
    Op.SCALE: OpDef("scale", lambda t, a: a * _bits_f32(t.op_params[0])),
    Op.SILU: OpDef("silu", lambda t, a: _silu(a)),
    Op.RMS_NORM: OpDef("rms_norm", _ref_rms_norm),
    Op.CONCAT: OpDef("concat", lambda t, a, b: np.concatenate([a, b], axis=3 - t.op_params[0])),
    Op.SSM_CONV: OpDef("ssm_conv", _ref_ssm_conv, wsize=_conv_wsize),
    Op.SSM_SCAN: OpDef("ssm_scan", _ref_ssm_scan, wsize=_scan_wsize),
    Op.GATE_SILU: OpDef("gate_silu", lambda t, y, z: y * _silu(z)),
    Op.QUANTIZE: OpDef("quantize", _ref_quantize),
    Op.ROPE: OpDef("rope", _ref_rope, wsize=lambda t: 4 * t.op_params[0] + 64),
    Op.KV_STORE: OpDef("kv_store", _ref_kv_store),
    Op.ATTN: OpDef("attn", _ref_attn, wsize=_attn_wsize),
    Op.RELU_SQR: OpDef("relu_sqr", lambda t, a: np.maximum(a, 0) ** 2),
    Op.GATE_SIGMOID: OpDef("gate_sigmoid", lambda t, y, z: y / (1.0 + np.exp(-z))),
    Op.GATED_DELTA: OpDef("gated_delta", _ref_gated_delta, wsize=_delta_wsize),
}

EMPTY_OPS = (Op.NONE, Op.VIEW)
