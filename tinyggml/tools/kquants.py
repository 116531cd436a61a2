"""K-quant quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) in vectorized numpy.

Each `quantize_q*_k(x)` takes float32 super-blocks `x` of shape (n_blocks, 256) and returns
uint8 blocks (n_blocks, type_size) in the byte layout that `gguf.quants.dequantize` reads.
They follow ggml's reference quantizers step by step (ggml-quants.c, `quantize_row_q*_K_ref`,
which llama-quantize uses when no importance matrix is given):

    Q2_K  16 x 16 values, 2-bit, 4-bit scale + min   make_qkx2_quants(nmax 3, |x| weights, MAD)
    Q3_K  16 x 16 values, 3-bit, 6-bit signed scale  make_q3_quants (coordinate descent)
    Q4_K   8 x 32 values, 4-bit, 6-bit scale + min   make_qkx2_quants(nmax 15, 20 steps)
    Q5_K   8 x 32 values, 5-bit, 6-bit scale + min   make_qkx2_quants(nmax 31, 15 steps)
    Q6_K  16 x 16 values, 6-bit, 8-bit signed scale  make_qx_quants(nmax 32, rmse_type 1)

and the super-block scale(s) in F16. The C code walks one block at a time; here every step
runs on all (sub-)blocks at once (sub-blocks as columns, so the C code's inner loops over the
16 or 32 values of a sub-block run over contiguous rows), and the Python loops left are the
short ones over search steps and sub-block values.

The output is bit-identical to ggml-quants.c compiled without floating-point contraction
(checked on ~33k blocks of varied data per type; tests/test_quantize.py keeps hashes of its
output).
For that the float32 arithmetic follows the C code's order: sums accumulate left to right
(`_seqsum`, not numpy's pairwise sum), products keep C's association (`(w*l)*x`), and
`nearest_int` is ggml's round-half-even bit trick. A build of ggml that fuses multiply-adds
(-march=native with GCC's default -ffp-contract=fast, or clang on arm64) rounds differently:
with GCC -O3 -march=native, C against C, about 1% of Q3_K blocks differ, 2-5% of Q6_K, 4-8% of
Q4_K and 20-65% of Q2_K/Q5_K blocks, by one quant step here and there.
"""
import numpy as np
import gguf

QK_K = 256
F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)


# ---- helpers ---------------------------------------------------------------------------------

def nearest_int(v: np.ndarray, scratch: bool = False) -> np.ndarray:
    """ggml's nearest_int: add 1.5*2^23 in float32 and read the mantissa (round half to even;
    for |v| > 2^22, where the C code asserts, it wraps the same way the C code does).
    scratch: v is a float32 temporary that may be overwritten."""
    t = v if scratch and v.dtype == F32 else np.array(v, F32)
    with np.errstate(invalid="ignore", over="ignore"):
        t += F32(12582912.0)
    bits = t.view(np.int32)
    bits &= 0x007FFFFF
    bits -= 0x00400000
    return bits


def _seqsum(a: np.ndarray) -> np.ndarray:
    """Sum over the first axis, in order, in float32: what a C `for` loop gives (numpy's own
    sum is pairwise and rounds differently)."""
    s = a[0].copy()
    for row in a[1:]:
        s += row
    return s


def _fp16(v: np.ndarray):
    """float32 -> (F16 bytes, shape (..., 2); the F16 value back in float32)."""
    h = np.asarray(v, F32).astype(np.float16)
    return h.view(np.uint8).reshape(*h.shape, 2), h.astype(F32)


def _first_absmax(x: np.ndarray, axis: int):
    """(max |x|, the x with the largest |x|, the first one on ties) along `axis`."""
    i = np.expand_dims(np.abs(x).argmax(axis=axis), axis)
    v = np.take_along_axis(x, i, axis=axis).squeeze(axis)
    return np.abs(v), v


def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """(n, 256) values 0..3 -> (n, 64) bytes: byte 32*h + l holds L[128h + l + 32k] at bits 2k."""
    L = L.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)).reshape(-1, 64)


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """8 six-bit scales and mins per block -> the 12 bytes Q4_K/Q5_K store (get_scale_min_k4)."""
    ls, lm = ls.astype(np.uint8), lm.astype(np.uint8)
    out = np.empty((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return out


# ---- per-sub-block scale searches (ggml-quants.c) --------------------------------------------
# These take the sub-blocks as columns: x (k, n) holds n sub-blocks of k values, so that the
# loops over the k values (the C code's inner loops) run over contiguous rows.

def make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep, use_mad):
    """Asymmetric quants L in [0, nmax] with x ~ scale*L - the_min, minimizing sum w*err
    (err = |diff| if use_mad else diff^2) over nstep+1 trial scales.
    x, w: (k, n) float32. Returns (scale (n,), the_min (n,), L (k, n) uint8)."""
    n_max = F32(nmax)
    mn0 = np.minimum(x.min(axis=0), F32(0))
    mx = x.max(axis=0)
    flat = mx == mn0                                 # fixed up at the end
    span1 = np.where(flat, F32(1), F32(0))
    sum_w, sum_x = _seqsum(w), _seqsum(w * x)
    mn = mn0

    def quants(iscale):                              # clip(round(iscale*(x - min)), 0, nmax)
        t = x - mn
        t *= iscale
        q = nearest_int(t, scratch=True)
        np.clip(q, 0, nmax, out=q)
        return q.astype(F32)

    def error(scale, m, L):                          # sum w * err(scale*L + min - x)
        d = scale * L
        d += m
        d -= x
        if use_mad:
            np.abs(d, out=d)
        else:
            d *= d
        d *= w
        return _seqsum(d)

    iscale = n_max / (mx - mn + span1)
    scale = F32(1) / iscale
    L = quants(iscale)
    best = error(scale, mn, L)
    with np.errstate(divide="ignore", invalid="ignore"):
        for step in range(nstep + 1):
            iscale = (F32(rmin) + F32(rdelta) * F32(step) + n_max) / (mx - mn + span1)
            La = quants(iscale)
            wl = w * La
            sum_l, sum_l2, sum_xl = _seqsum(wl), _seqsum(wl * La), _seqsum(wl * x)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = this_min > 0
            this_min[pos] = 0
            this_scale[pos] = (sum_xl / sum_l2)[pos]
            err = error(this_scale, this_min, La)
            better = (D > 0) & (err < best)
            if better.any():
                L = np.where(better, La, L)
                best = np.where(better, err, best)
                scale = np.where(better, this_scale, scale)
                mn = np.where(better, this_min, mn)
    scale = np.where(flat, F32(0), scale)
    L[:, flat] = 0
    return scale, -np.where(flat, mn0, mn), L.astype(np.uint8)


def make_qx_quants(x, nmax):
    """Symmetric quants L in [0, 2*nmax) with x ~ scale*(L - nmax), weights x^2 (rmse_type 1),
    best of 19 trial scales. x: (k, n) float32. Returns (scale (n,), L (k, n) int)."""
    amax, vmax = _first_absmax(x, 0)
    zero = amax < GROUP_MAX_EPS
    vmax = np.where(zero, F32(1), vmax)
    w = x * x
    wx = w * x

    def trial(iscale):
        l = nearest_int(iscale * x, scratch=True)
        np.clip(l, -nmax, nmax - 1, out=l)
        lf = l.astype(F32)
        sumlx = _seqsum(wx * lf)
        lf *= w
        lf *= l
        return l, sumlx, _seqsum(lf)                   # sum (w*x)*l, sum (w*l)*l

    L, sumlx, suml2 = trial(F32(-nmax) / vmax)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            l, slx, sl2 = trial(-(F32(nmax) + F32(0.1) * F32(step)) / vmax)
            better = (sl2 > 0) & (slx * slx > best * sl2)
            L = np.where(better, l, L)
            scale = np.where(better, slx / sl2, scale)
            best = np.where(better, scale * slx, best)
    L += nmax
    L[:, zero] = 0
    return np.where(zero, F32(0), scale), L


def make_q3_quants(x, nmax):
    """make_q3_quants with do_rmse: symmetric quants in [0, 2*nmax), weights x^2, refined by
    up to 5 passes of coordinate descent over the values in order.
    x: (k, n) float32. Returns (scale (n,), L (k, n) int)."""
    amax, vmax = _first_absmax(x, 0)
    zero = amax < GROUP_MAX_EPS
    vmax = np.where(zero, F32(1), vmax)
    L = np.clip(nearest_int((F32(-nmax) / vmax) * x, scratch=True), -nmax, nmax - 1)
    w = x * x
    wx = w * x
    Lf = L.astype(F32)
    sumlx, suml2 = _seqsum(wx * Lf), _seqsum((w * Lf) * Lf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # a pass that changes nothing leaves the state as it was, so running all 5 passes
        # gives what the C code's early `break` gives
        for _ in range(5):
            for i in range(x.shape[0]):
                xi, wi, wxi, li = x[i], w[i], wx[i], L[i].astype(F32)
                slx = sumlx - wxi * li
                sl2 = suml2 - (wi * li) * li
                new_l = np.clip(nearest_int((xi * sl2) / slx, scratch=True), -nmax, nmax - 1)
                nl = new_l.astype(F32)
                slx2 = slx + wxi * nl
                sl22 = sl2 + (wi * nl) * nl
                take = ((slx > 0) & (new_l != L[i]) & (sl22 > 0)
                        & ((slx2 * slx2) * suml2 > (sumlx * sumlx) * sl22))
                L[i] = np.where(take, new_l, L[i])
                sumlx = np.where(take, slx2, sumlx)
                suml2 = np.where(take, sl22, suml2)
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    L += nmax
    L[:, zero] = 0
    return np.where(zero, F32(0), scale), L


# ---- the block formats -----------------------------------------------------------------------

def _kx_block(x, nmax, rmin, rdelta, nstep, use_mad, n_sub, q_scale):
    """Shared part of Q2_K / Q4_K / Q5_K: sub-block (scale, min) search, then the integer
    scales/mins relative to the super-block's d/dmin, then the final quants from the rounded
    scales. Returns (ls, lm, d bytes, dmin bytes, L (n, 256))."""
    n, k = x.shape[0], QK_K // n_sub
    xt = np.ascontiguousarray(x.reshape(n * n_sub, k).T)     # sub-blocks as columns
    if use_mad:
        w = np.abs(xt)
    else:
        w = np.sqrt(_seqsum(xt * xt) / F32(k)) + np.abs(xt)
    scales, mins, L = make_qkx2_quants(xt, w, nmax, rmin, rdelta, nstep, use_mad)
    scales, mins = scales.reshape(n, n_sub), mins.reshape(n, n_sub)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, F32(q_scale) / max_scale, F32(0))
        inv_min = np.where(max_min > 0, F32(q_scale) / max_min, F32(0))
    ls = nearest_int(inv_scale[:, None] * scales, scratch=True) & 0xFF
    lm = nearest_int(inv_min[:, None] * mins, scratch=True) & 0xFF
    d_bytes, d = _fp16(max_scale / F32(q_scale))
    m_bytes, dmin = _fp16(max_min / F32(q_scale))
    return ls, lm, d_bytes, m_bytes, d, dmin, L.T.reshape(n, n_sub, k), x.reshape(n, n_sub, k)


def _requant_asym(xs, L, d, dmin, sc, m, nmax):
    """Final quants from the stored scales: l = round((x + dmin*m) / (d*sc)); sub-blocks whose
    scale rounds to 0 keep the quants of the search, as in the C code."""
    dl = d[:, None] * sc.astype(F32)
    dm = dmin[:, None] * m.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(nearest_int((xs + dm[..., None]) / dl[..., None], scratch=True), 0, nmax)
    return np.where((dl != 0)[..., None], q, L).reshape(xs.shape[0], -1)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """(n, 256) float32 -> (n, 144) bytes: d, dmin (F16), scales[12], qs[128]."""
    ls, lm, d_b, m_b, d, dmin, L, xs = _kx_block(x, 15, -1.0, 0.1, 20, False, 8, 63)
    ls, lm = np.minimum(ls, 63), np.minimum(lm, 63)
    L = _requant_asym(xs, L, d, dmin, ls, lm, 15).reshape(-1, 4, 2, 32).astype(np.uint8)
    qs = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(-1, 128)
    return np.concatenate([d_b, m_b, _pack_scales_k4(ls, lm), qs], axis=1)


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    """(n, 256) float32 -> (n, 176) bytes: d, dmin (F16), scales[12], qh[32], qs[128]."""
    ls, lm, d_b, m_b, d, dmin, L, xs = _kx_block(x, 31, -0.5, 0.1, 15, False, 8, 63)
    ls, lm = np.minimum(ls, 63), np.minimum(lm, 63)
    L = _requant_asym(xs, L, d, dmin, ls, lm, 31).reshape(-1, 8, 32).astype(np.uint8)
    low, high = L & 0xF, L >> 4                       # sub-block 2k+h: qh bit 2k+h
    qs = (low[:, 0::2] | (low[:, 1::2] << 4)).reshape(-1, 128)
    qh = np.zeros((L.shape[0], 32), np.uint8)
    for j in range(8):
        qh |= high[:, j] << j
    return np.concatenate([d_b, m_b, _pack_scales_k4(ls, lm), qh, qs], axis=1)


def quantize_q2_k(x: np.ndarray) -> np.ndarray:
    """(n, 256) float32 -> (n, 84) bytes: scales[16] (4-bit scale | 4-bit min << 4), qs[64],
    d, dmin (F16)."""
    ls, lm, d_b, m_b, d, dmin, L, xs = _kx_block(x, 3, -0.5, 0.1, 15, True, 16, 15)
    packed = (ls | (lm << 4)) & 0xFF
    L = _requant_asym(xs, L, d, dmin, packed & 0xF, packed >> 4, 3)
    return np.concatenate([packed.astype(np.uint8), _pack_2bit(L), d_b, m_b], axis=1)


def quantize_q3_k(x: np.ndarray) -> np.ndarray:
    """(n, 256) float32 -> (n, 110) bytes: hmask[32], qs[64], scales[12] (6-bit signed), d."""
    n = x.shape[0]
    scales, L = make_q3_quants(np.ascontiguousarray(x.reshape(n * 16, 16).T), 4)
    scales, L, xs = scales.reshape(n, 16), L.T.reshape(n, 16, 16), x.reshape(n, 16, 16)
    _, max_scale = _first_absmax(scales, 1)
    nz = max_scale != 0
    with np.errstate(divide="ignore"):
        iscale = np.where(nz, F32(-32) / np.where(nz, max_scale, F32(1)), F32(0))
    l = np.clip(nearest_int(iscale[:, None] * scales, scratch=True).astype(np.int8), -32, 31) + 32
    l = np.where(nz[:, None], l, 0).astype(np.uint8)      # max_scale == 0: all scales 0
    sc = np.zeros((n, 12), np.uint8)
    sc[:, 0:8] = (l[:, 0:8] & 0xF) | ((l[:, 8:16] & 0xF) << 4)
    hi = (l >> 4).reshape(n, 4, 4)                          # scale j: bits 2*(j//4) of byte 8 + j%4
    sc[:, 8:12] = hi[:, 0] | (hi[:, 1] << 2) | (hi[:, 2] << 4) | (hi[:, 3] << 6)
    with np.errstate(divide="ignore"):
        d_b, d = _fp16(np.where(nz, F32(1) / np.where(nz, iscale, F32(1)), F32(0)))
    dl = d[:, None] * (l.astype(np.int16) - 32).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(nearest_int(xs / dl[..., None], scratch=True), -4, 3) + 4
    L = np.where((dl != 0)[..., None], q, L).reshape(n, 256)
    hmask = np.zeros((n, 32), np.uint8)
    for k in range(8):                                      # value 32k + m: bit k of hmask[m]
        hmask |= (L[:, 32 * k:32 * (k + 1)] > 3).astype(np.uint8) << k
    L = np.where(L > 3, L - 4, L)
    return np.concatenate([hmask, _pack_2bit(L), sc, d_b], axis=1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """(n, 256) float32 -> (n, 210) bytes: ql[128], qh[64], scales[16] (int8), d (F16)."""
    n = x.shape[0]
    scales, L = make_qx_quants(np.ascontiguousarray(x.reshape(n * 16, 16).T), 32)
    scales, L, xs = scales.reshape(n, 16), L.T.reshape(n, 16, 16), x.reshape(n, 16, 16)
    max_abs, max_scale = _first_absmax(scales, 1)
    zero = max_abs < GROUP_MAX_EPS                          # the whole block is written as 0
    with np.errstate(divide="ignore"):
        iscale = F32(-128) / np.where(zero, F32(1), max_scale)
        d_b, d = _fp16(F32(1) / iscale)
    isc = np.minimum(127, nearest_int(iscale[:, None] * scales, scratch=True)).astype(np.int8)
    dl = d[:, None] * isc.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(nearest_int(xs / dl[..., None], scratch=True), -32, 31) + 32
    L = np.where((dl != 0)[..., None], q, L).reshape(n, 2, 4, 32).astype(np.uint8)
    ql = ((L[:, :, [0, 1]] & 0xF) | ((L[:, :, [2, 3]] & 0xF) << 4)).reshape(n, 128)
    h = L >> 4
    qh = (h[:, :, 0] | (h[:, :, 1] << 2) | (h[:, :, 2] << 4) | (h[:, :, 3] << 6)).reshape(n, 64)
    out = np.concatenate([ql, qh, isc.view(np.uint8), d_b], axis=1)
    out[zero] = 0
    return out


QUANTIZERS = {
    gguf.GGMLQuantizationType.Q2_K: quantize_q2_k,
    gguf.GGMLQuantizationType.Q3_K: quantize_q3_k,
    gguf.GGMLQuantizationType.Q4_K: quantize_q4_k,
    gguf.GGMLQuantizationType.Q5_K: quantize_q5_k,
    gguf.GGMLQuantizationType.Q6_K: quantize_q6_k,
}
