"""Every kernel against its numpy float64 reference (ops.py), over random shapes.

One helper, `check_op`, records a small graph, runs it through the C backend and through the
reference executor, and compares by NMSE (ggml test-backend-ops) and allclose. Shapes include
sizes that are not multiples of 8 (SIMD tails), non-contiguous views, 1-3 threads, and both the
SIMD and the forced scalar path.
"""
import numpy as np
import pytest

from tinyggml import ops
from tinyggml.backend import Plan, set_simd, simd_compiled
from tinyggml.options import GraphOptions
from tinyggml.graph import Graph
from tinyggml.ops import OPS, Op, ShapeError
from tinyggml.tensor import F16, F32, I32, INPUT, STATE, leaf

THREADS = [1, 2, 3]
SIMD = [True, False] if simd_compiled() else [False]


@pytest.fixture(params=SIMD, ids=lambda s: "simd" if s else "scalar")
def simd(request):
    set_simd(request.param)
    yield request.param
    set_simd(True)


def rnd(rng, *shape, dtype=np.float32, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def mk(name, arr, type=F32, flags=INPUT):
    """A leaf over `arr` (numpy shape = reversed ggml ne)."""
    return leaf(type, tuple(reversed(arr.shape)), name, flags, data=arr)


def nmse(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.mean(b * b)
    return np.mean((a - b) ** 2) / den if den > 0 else np.mean((a - b) ** 2)


def check_op(out, n_threads, atol=1e-5, rtol=1e-4, max_nmse=1e-9, states=()):
    g = Graph()
    g.output(out)
    ref = g.compute_numpy()                    # float64, on copies of the leaf data
    plan = Plan(g, max_threads=3)
    plan.run(n_threads)
    got = plan.numpy(out)
    want = ref[id(out)].reshape(got.shape)
    assert nmse(got, want) <= max_nmse, f"{OPS[out.op].name}: nmse {nmse(got, want):.3g}"
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)
    for s in states:                           # in-place state updates
        np.testing.assert_allclose(s.data, ref[id(s)].reshape(s.data.shape), atol=atol, rtol=rtol)
    return got


# ---- element-wise ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1,), (7,), (33, 5), (65, 3, 2), (8, 4, 3, 2)])
@pytest.mark.parametrize("nt", THREADS)
def test_unary(simd, shape, nt):
    rng = np.random.default_rng(len(shape) * 10 + nt)
    a = mk("a", rnd(rng, *reversed(shape), scale=4))
    b = mk("b", rnd(rng, *reversed(shape), scale=4))
    check_op(ops.silu(a), nt)
    check_op(ops.scale(a, -0.37), nt)
    check_op(ops.gate_silu(a, b), nt)


@pytest.mark.parametrize("sa,sb", [((7,), (7,)), ((33, 5), (33, 1)), ((33, 5), (33, 5)),
                                   ((65, 3, 2), (65, 3, 1)), ((9, 4, 3), (1, 4, 1)),
                                   ((16, 6), (16, 3))])
@pytest.mark.parametrize("nt", THREADS)
def test_add_mul_broadcast(simd, sa, sb, nt):
    rng = np.random.default_rng(nt)
    a = mk("a", rnd(rng, *reversed(sa)))
    b = mk("b", rnd(rng, *reversed(sb)))
    check_op(ops.add(a, b), nt)
    check_op(ops.mul(a, b), nt)


@pytest.mark.parametrize("nt", THREADS)
def test_unary_binary_noncontiguous(simd, nt):
    rng = np.random.default_rng(7)
    big = mk("big", rnd(rng, 6, 41))                       # {41, 6}
    v = ops.view(big, (13, 6), (4, 41 * 4), 8 * 4)         # columns 8..20: strided rows
    t = ops.transpose(ops.view(big, (11, 6), (4, 41 * 4), 0))   # {6, 11}, nb0 != 4
    w = mk("w", rnd(rng, 11, 6))
    check_op(ops.silu(v), nt)
    check_op(ops.gate_silu(v, ops.view(big, (13, 6), (4, 41 * 4), 20 * 4)), nt)
    check_op(ops.add(t, w), nt)
    check_op(ops.mul(w, t), nt)
    check_op(ops.cont(t), nt)
    check_op(ops.silu(t), nt)


# ---- rms_norm -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (64, 5), (129, 2, 3)])
@pytest.mark.parametrize("nt", THREADS)
def test_rms_norm(simd, shape, nt):
    rng = np.random.default_rng(3)
    a = mk("a", rnd(rng, *reversed(shape), scale=3))
    check_op(ops.rms_norm(a, 1e-5), nt)
    # grouped, through a reshape: {n/2, 2, rows}
    if shape[0] % 2 == 0:
        check_op(ops.rms_norm(ops.reshape(a, shape[0] // 2, 2, *shape[1:]), 1e-6), nt)


def test_rms_norm_strided_rows(simd):
    rng = np.random.default_rng(4)
    big = mk("big", rnd(rng, 5, 40))
    check_op(ops.rms_norm(ops.view(big, (17, 5), (4, 160), 12), 1e-5), 2)


# The fused form: weight broadcast over rows (one per row group, as Mamba-2's ssm_norm) and a
# gate read through a strided view (z inside the in_proj rows), against float64, and bit for
# bit against the separate gate_silu -> rms_norm -> mul it replaces in the models (where rows
# are whole vectors of 8; otherwise the SIMD silu and the scalar tail split the values
# differently and the two agree to rounding).
@pytest.mark.parametrize("ne0,groups,rows", [(1, 1, 1), (7, 1, 3), (16, 2, 5), (21, 3, 4), (64, 8, 2)])
@pytest.mark.parametrize("nt", THREADS)
def test_rms_norm_weight_gate(simd, ne0, groups, rows, nt):
    rng = np.random.default_rng(ne0 * 7 + groups + rows)
    a = mk("a", rnd(rng, rows, groups, ne0, scale=3))                   # {ne0, groups, rows}
    w = mk("w", rnd(rng, groups, ne0))                                  # {ne0, groups}
    w1 = mk("w1", rnd(rng, 1, ne0))                                     # {ne0, 1}: every row
    zx = mk("zx", rnd(rng, rows, ne0 * groups + 5, scale=3))            # z inside wider rows
    z = ops.view(zx, (ne0, groups, rows), (4, ne0 * 4, (ne0 * groups + 5) * 4), 4)
    check_op(ops.rms_norm(a, 1e-5, w), nt)
    check_op(ops.rms_norm(a, 1e-5, w1), nt)
    check_op(ops.rms_norm(a, 1e-5, gate=z), nt)
    fused = ops.rms_norm(a, 1e-5, w, gate=z)
    check_op(fused, nt)
    flat = ops.view(zx, (ne0 * groups, rows), (4, (ne0 * groups + 5) * 4), 4)
    gated = ops.gate_silu(ops.reshape(a, ne0 * groups, rows), flat)
    sep = ops.mul(ops.rms_norm(ops.reshape(gated, ne0, groups, rows), 1e-5), w)
    g = Graph()
    g.output(fused)
    g.output(sep)
    plan = Plan(g, max_threads=3)
    plan.run(nt)
    if ne0 % 8 == 0 or not simd:
        np.testing.assert_array_equal(plan.numpy(fused), plan.numpy(sep))
    else:
        np.testing.assert_allclose(plan.numpy(fused), plan.numpy(sep), rtol=1e-6, atol=1e-7)


def test_rms_norm_weight_gate_checked():
    rng = np.random.default_rng(0)
    a = mk("a", rnd(rng, 3, 8))
    with pytest.raises(ShapeError, match="weight"):
        ops.rms_norm(a, 1e-5, mk("w", rnd(rng, 1, 7)))
    with pytest.raises(ShapeError, match="weight"):
        ops.rms_norm(a, 1e-5, mk("w", rnd(rng, 2, 8)))                  # 3 rows, 2 weights
    with pytest.raises(ShapeError, match="gate"):
        ops.rms_norm(a, 1e-5, gate=mk("z", rnd(rng, 4, 8)))


# ---- cpy / concat / views -------------------------------------------------------------------
@pytest.mark.parametrize("nt", THREADS)
def test_cpy_into_view_and_permute(simd, nt):
    rng = np.random.default_rng(5)
    a = mk("a", rnd(rng, 2, 3, 5, 7))                       # {7, 5, 3, 2}
    p = ops.permute(a, 2, 0, 3, 1)                           # {5, 2, 7, 3}: non-contiguous
    check_op(ops.cont(p), nt)
    dst = mk("dst", np.zeros((4, 9, 13), np.float32), flags=STATE)
    target = ops.view(dst, (5, 7), (4, 13 * 4), 4 * (13 * 2 + 3))
    src = mk("src", rnd(rng, 7, 5))
    out = ops.cpy(src, target)
    check_op(out, nt, states=[dst])
    assert np.array_equal(dst.data[0, 2:9, 3:8], src.data)


@pytest.mark.parametrize("dim", [0, 1, 2])
@pytest.mark.parametrize("nt", THREADS)
def test_concat(simd, dim, nt):
    rng = np.random.default_rng(dim)
    sa, sb = [5, 3, 2], [5, 3, 2]
    sb[dim] = 4
    a = mk("a", rnd(rng, *reversed(sa)))
    b = mk("b", rnd(rng, *reversed(sb)))
    check_op(ops.concat(a, b, dim), nt)
    # a transposed (non-contiguous) source, as conv states meet transposed inputs
    x = mk("x", rnd(rng, 6, 9))                                  # {9, 6}
    st = mk("st", rnd(rng, 9, 3))                                # {3, 9}
    check_op(ops.concat(st, ops.transpose(x), 0), nt)


# ---- get_rows -------------------------------------------------------------------------------
@pytest.mark.parametrize("wtype", [F32, F16])
@pytest.mark.parametrize("ne0", [1, 7, 64, 71])
@pytest.mark.parametrize("nt", THREADS)
def test_get_rows(simd, wtype, ne0, nt):
    rng = np.random.default_rng(ne0)
    dt = np.float16 if wtype == F16 else np.float32
    w = mk("w", rnd(rng, 37, ne0, dtype=dt), type=wtype)
    ids = mk("ids", rng.integers(0, 37, size=11).astype(np.int32), type=I32)
    check_op(ops.get_rows(w, ids), nt, atol=0, rtol=0)


# ---- mul_mat --------------------------------------------------------------------------------
MM_SHAPES = [(1, 1, 1), (7, 3, 1), (16, 8, 1), (33, 13, 5), (64, 65, 7), (127, 9, 33),
             (256, 31, 2)]


@pytest.mark.parametrize("K,M,N", MM_SHAPES)
@pytest.mark.parametrize("wtype", [F32, F16])
@pytest.mark.parametrize("nt", THREADS)
def test_mul_mat(simd, K, M, N, wtype, nt):
    rng = np.random.default_rng(K * 1000 + M + N)
    dt = np.float16 if wtype == F16 else np.float32
    a = mk("a", rnd(rng, M, K, dtype=dt), type=wtype)
    b = mk("b", rnd(rng, N, K))
    check_op(ops.mul_mat(a, b), nt, atol=1e-4)


@pytest.mark.parametrize("K", [77, 96, 768])       # scalar + 8-value tails / 16-value steps only
@pytest.mark.parametrize("wtype", [F32, F16])
def test_mul_mat_decode_rows_in_4_streams(simd, K, wtype):
    """Decode (one column) reads each thread's rows in 4 quarters side by side (mul_mat.c,
    tg_dot_rows4_*; a short last quarter repeats a row and drops it): against float64, and every
    row bit for bit the same whatever the thread count and wherever it lands (the matrix shifted
    by one row moves every row into another quarter or stream)."""
    rng = np.random.default_rng(K)
    dt = np.float16 if wtype == F16 else np.float32
    w = rnd(rng, 47, K, dtype=dt)
    x = mk("x", rnd(rng, 1, K))
    one = check_op(ops.mul_mat(mk("a", w[1:].copy(), type=wtype), x), 1, atol=1e-4).copy()
    for nt in (2, 3):
        np.testing.assert_array_equal(
            check_op(ops.mul_mat(mk("a", w[1:].copy(), type=wtype), x), nt, atol=1e-4), one)
    shifted = check_op(ops.mul_mat(mk("a", w.copy(), type=wtype), x), 2, atol=1e-4)
    np.testing.assert_array_equal(shifted[..., 1:], one)


@pytest.mark.parametrize("nt", [1, 2])
def test_mul_mat_broadcast_and_strided(simd, nt):
    rng = np.random.default_rng(11)
    a = mk("a", rnd(rng, 1, 2, 9, 19))                        # {19, 9, 2, 1}
    b = mk("b", rnd(rng, 3, 4, 5, 19))                        # {19, 5, 4, 3}
    check_op(ops.mul_mat(a, b), nt, atol=1e-4)
    big = mk("big", rnd(rng, 6, 50))                          # activations with strided rows
    bv = ops.view(big, (19, 6), (4, 200), 3 * 4)
    w = mk("w", rnd(rng, 10, 19))
    check_op(ops.mul_mat(w, bv), nt, atol=1e-4)


# ---- ssm_conv -------------------------------------------------------------------------------
def _seq_info(rng, lens, n_slots):
    slots = rng.permutation(n_slots)[:len(lens)]
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    return np.stack([slots, starts, lens], axis=1).astype(np.int32)


@pytest.mark.parametrize("ch", [1, 7, 8, 37, 64])
@pytest.mark.parametrize("lens", [[1], [5], [3, 1, 6], [1, 1], [2, 7]])   # len 2 < d_conv-1: state kept in part
@pytest.mark.parametrize("dc", [4, 3])     # 4: every Mamba model (an unrolled decode path)
@pytest.mark.parametrize("nt", THREADS)
def test_ssm_conv(simd, ch, lens, dc, nt):
    rng = np.random.default_rng(ch + sum(lens))
    n_slots = 5
    n_t = sum(lens)
    big = mk("xz", rnd(rng, n_t, 2 * ch + 3))                 # x is a strided view, like xz
    x = ops.view(big, (ch, n_t), (4, (2 * ch + 3) * 4), 0)
    state = mk("state", rnd(rng, n_slots, ch, dc - 1), flags=STATE)
    w = mk("w", rnd(rng, ch, dc))
    b = mk("b", rnd(rng, ch, scale=0.2))
    info = mk("info", _seq_info(rng, lens, n_slots), type=I32)
    check_op(ops.ssm_conv(x, state, w, b, info, apply_silu=True), nt, states=[state])
    check_op(ops.ssm_conv(x, state, w, None, info, apply_silu=False), nt, states=[state])


# ---- ssm_scan -------------------------------------------------------------------------------
# (d_state, head_dim, n_head, n_group, mamba1)
SCAN_SHAPES = [(16, 1, 13, 1, True), (5, 1, 9, 1, True), (16, 1, 128, 1, True),
               (32, 16, 8, 1, False), (7, 3, 6, 2, False), (32, 32, 8, 2, False),
               (128, 4, 8, 8, False)]


def _scan_inputs(rng, ds, hd, nh, ng, lens, n_slots=4, dt_scale=2.0, m1=False):
    """state, x, dt, A, B, C, D, seq_info; x, B, C are views into one xBC-like buffer (the
    Mamba-2 layout), dt strided too; A per state element when m1, else scalar per head."""
    n_t = sum(lens)
    state = mk("state", rnd(rng, n_slots, nh, hd, ds, scale=0.5), flags=STATE)
    width = hd * nh + 2 * ng * ds + 3
    xbc = mk("xbc", rnd(rng, n_t, width))
    x = ops.view(xbc, (hd, nh, n_t), (4, hd * 4, width * 4), 0)
    B = ops.view(xbc, (ds, ng, n_t), (4, ds * 4, width * 4), hd * nh * 4)
    C = ops.view(xbc, (ds, ng, n_t), (4, ds * 4, width * 4), (hd * nh + ng * ds) * 4)
    dtb = mk("dt", rnd(rng, n_t, nh + 2, scale=dt_scale))
    dt = ops.view(dtb, (nh, n_t), (4, (nh + 2) * 4), 4)
    A = mk("A", -np.exp(rng.uniform(0, np.log(16), size=(nh, ds if m1 else 1))).astype(np.float32))
    D = mk("D", rng.uniform(0.5, 1.5, size=nh).astype(np.float32))
    info = mk("info", _seq_info(rng, lens, n_slots), type=I32)
    return state, x, dt, A, B, C, D, info


@pytest.mark.parametrize("ds,hd,nh,ng,m1", SCAN_SHAPES)
@pytest.mark.parametrize("lens", [[1], [6], [2, 5, 1], [3, 11]])   # Mamba-1: < 8 direct, >= 8 transposed
@pytest.mark.parametrize("nt", THREADS)
def test_ssm_scan(simd, ds, hd, nh, ng, m1, lens, nt):
    rng = np.random.default_rng(ds * hd + nh + len(lens))
    args = _scan_inputs(rng, ds, hd, nh, ng, lens, m1=m1)
    check_op(ops.ssm_scan(*args), nt, atol=2e-5, states=[args[0]])


# The chunked (SSD) scan against the float64 recurrence: chunk sizes that split sequences
# into several chunks with a partial last one, odd head_dim / d_state (SIMD tails), groups.
@pytest.mark.parametrize("ds,hd,nh,ng", [(16, 8, 4, 1), (7, 3, 6, 2), (32, 17, 4, 2),
                                         (128, 64, 2, 1), (13, 64, 3, 3)])
@pytest.mark.parametrize("lens,chunk", [([37], 16), ([40, 1, 23], 8), ([5], 3), ([70], 64),
                                        ([100, 33], 64)])
@pytest.mark.parametrize("nt", THREADS)
def test_ssm_scan_chunked(simd, ds, hd, nh, ng, lens, chunk, nt):
    rng = np.random.default_rng(ds + hd + nh + sum(lens) + chunk)
    args = _scan_inputs(rng, ds, hd, nh, ng, lens)
    opts = GraphOptions(scan="chunked", ssd_chunk=chunk)
    check_op(ops.ssm_scan(*args, opts=opts), nt, atol=2e-5, states=[args[0]])


@pytest.mark.parametrize("ds,hd", [(128, 64), (13, 72), (16, 104)])
def test_ssm_scan_chunked_wide_bit_for_bit(ds, hd):
    """AVX-512 builds run the chunked scan's blocks 32 columns wide (ssm.c tg_ssd_block_z,
    GraphOptions.wide_scan): the same outputs and states bit for bit as the 16-column blocks
    (head sizes with 16- and 8-column tails). Elsewhere the option changes nothing."""
    got = {}
    for wide in (False, True):
        args = _scan_inputs(np.random.default_rng(ds + hd), ds, hd, 3, 1, [40, 1, 23])
        out = ops.ssm_scan(*args, opts=GraphOptions(scan="chunked", ssd_chunk=16, wide_scan=wide))
        got[wide] = (check_op(out, 2, atol=2e-5, states=[args[0]]).copy(), args[0].data.copy())
    np.testing.assert_array_equal(got[True][0], got[False][0])
    np.testing.assert_array_equal(got[True][1], got[False][1])


@pytest.mark.parametrize("nh,ng", [(12, 3), (11, 1), (9, 3)])
@pytest.mark.parametrize("lens", [[1], [5], [2, 1, 3]])
def test_ssm_scan_heads_side_by_side(simd, nh, ng, lens):
    """The recurrent Mamba-2 scan takes a thread's heads in 4 quarters, one head of each side
    by side (ssm.c, tg_scan_heads4_recurrent; a short last quarter leaves its partners to the
    one-head loop). 12 heads: 1 and 3 threads run every head in fours, 2 threads none; 11 and
    9 heads mix both. Against float64, and outputs and states bit for bit the same whatever
    the thread count (so whichever loop a head lands in)."""
    runs = []
    for nt in (1, 2, 3):
        args = _scan_inputs(np.random.default_rng(nh + len(lens)), 16, 8, nh, ng, lens)
        y = check_op(ops.ssm_scan(*args, opts=GraphOptions(scan="recurrent")), nt, atol=2e-5, states=[args[0]])
        runs.append((y.copy(), args[0].data.copy()))
    for y, state in runs[1:]:
        np.testing.assert_array_equal(y, runs[0][0])
        np.testing.assert_array_equal(state, runs[0][1])


@pytest.mark.parametrize("algo", ["chunked", "recurrent", "auto"])
def test_ssm_scan_chunked_equals_recurrent(algo):
    """Realistic Mamba-2 numbers (dt around softplus^-1 of 0.001..0.1, state 128 x 64): the
    chunked scan and the recurrence agree with each other and with float64 within 1e-5."""
    rng = np.random.default_rng(7)
    lens = [300, 17, 1]
    args = _scan_inputs(rng, 128, 64, 4, 1, lens, dt_scale=1.0)
    dtb = args[2].src[0].data
    dtb[:] = np.log(np.expm1(np.exp(rng.uniform(np.log(1e-3), np.log(0.1), dtb.shape)))).astype(np.float32)
    check_op(ops.ssm_scan(*args, opts=GraphOptions(scan=algo)), 2, atol=1e-5, rtol=1e-4, states=[args[0]])


def test_ssm_scan_algo_options():
    """The scan algorithm is a graph option, checked when the options are made; with A per
    state element (Mamba-1) the scan recurs whatever the option says."""
    rng = np.random.default_rng(0)
    state, x, dt, A, B, C, D, info = _scan_inputs(rng, 8, 1, 4, 1, [3])
    A1 = mk("A", -np.ones((4, 8), np.float32))
    chunked = GraphOptions(scan="chunked", ssd_chunk=5, ssd_min_len=3, wide_scan=False)
    assert ops.ssm_scan(state, x, dt, A, B, C, D, info, chunked).op_params == (2, 5, 3, 0)
    assert ops.ssm_scan(state, x, dt, A1, B, C, D, info, chunked).op_params[0] == 1
    with pytest.raises(ValueError, match="scan"):
        GraphOptions(scan="ssd")
    with pytest.raises(ValueError, match="ssd_chunk"):
        GraphOptions(ssd_chunk=0)


def test_ssm_scan_large_dt_softplus_threshold(simd):
    """dt above the softplus threshold (20) and very negative: no inf/nan, matches reference."""
    rng = np.random.default_rng(0)
    state = mk("state", np.zeros((1, 4, 1, 8), np.float32), flags=STATE)
    x = mk("x", rnd(rng, 3, 4, 1))
    dt = mk("dt", np.array([[25.0, -30.0, 0.0, 19.9]] * 3, np.float32))
    A = mk("A", -np.ones((4, 8), np.float32))
    B, C = mk("B", rnd(rng, 3, 1, 8)), mk("C", rnd(rng, 3, 1, 8))
    info = mk("info", np.array([[0, 0, 3]], np.int32), type=I32)
    out = check_op(ops.ssm_scan(state, x, dt, A, B, C, None, info), 1, states=[state])
    assert np.isfinite(out).all()


@pytest.mark.parametrize("wtype", [F32, F16])
def test_k_block_is_a_graph_option(simd, wtype):
    """The float panels' k block is what the graph records (mul_mat op_params[0], from
    GraphOptions), not a constant of the kernels: any block length gives the unblocked sums bit
    for bit, and the node's scratch is sized by its own block."""
    rng = np.random.default_rng(11)
    K, M, N = 768, 21, 13
    a = mk("a", rnd(rng, M, K, dtype=np.float16 if wtype == F16 else np.float32), type=wtype)
    x = rnd(rng, N, K)
    outs = []
    for kc in (0, 256, 512):
        opts = GraphOptions(mm_kc=kc or 1024, mm_kblock_min_k=1 if kc else 10**6, mm_kblock_min_n=1)
        node = ops.mul_mat(a, mk("b", x), opts)
        assert node.op_params[0] == kc
        g = Graph()
        out = g.output(node)
        plan = Plan(g, max_threads=2)
        plan.run(2)
        outs.append(plan.numpy(out).copy())
    np.testing.assert_array_equal(outs[1], outs[0])
    np.testing.assert_array_equal(outs[2], outs[0])


def test_op_table_complete():
    """Every op id has a table entry, a reference and a C kernel id (tg.h enum order)."""
    import re
    from pathlib import Path
    import tinyggml
    hdr = (Path(tinyggml.__file__).parent / "backend/kernels/tg.h").read_text()
    enum = re.findall(r"^\s*TG_OP_(\w+)", hdr.split("enum tg_op")[1].split("};")[0], re.M)
    assert enum[-1] == "COUNT"
    assert [e.lower() for e in enum[:-1]] == [op.name.lower() for op in Op]
    assert set(OPS) == set(Op)
    for op in Op:
        assert (OPS[op].ref is None) == (op in (Op.NONE, Op.VIEW)), op


@pytest.mark.parametrize("wtype", [F32, F16])
@pytest.mark.parametrize("nt", [1, 3])
def test_mul_mat_k_blocked(simd, wtype, nt):
    """Rows longer than 2048 times 256+ columns are multiplied in k blocks of 1024 (mul_mat.c
    mul_mat.c tg_mul_mat_panels): against float64, and bit for bit against the same columns in a batch
    of 255 (not blocked). K = 2085 leaves a last partial block, M = 37 a partial row panel,
    N = 263 a partial column tile."""
    rng = np.random.default_rng(5)
    K, M, N = 2085, 37, 263
    o = GraphOptions()
    assert o.mm_kblock(K, N) == o.mm_kc < K and o.mm_kblock(K, N - 8) == 0   # blocked; 255 not
    dt = np.float16 if wtype == F16 else np.float32
    a = mk("a", rnd(rng, M, K, dtype=dt), type=wtype)
    x = rnd(rng, N, K)
    blocked = check_op(ops.mul_mat(a, mk("b", x)), nt, atol=1e-3, rtol=1e-4).copy()
    g = Graph()
    out = g.output(ops.mul_mat(a, mk("b2", x[8:].copy())))
    plan = Plan(g, max_threads=3)
    plan.run(nt)
    np.testing.assert_array_equal(plan.numpy(out), blocked[8:])


@pytest.mark.parametrize("wtype", [F32, F16])
@pytest.mark.parametrize("K,M,N", [(77, 37, 12), (64, 16, 23), (300, 33, 61), (2085, 19, 263),
                                   (300, 101, 29), (1000, 64, 12), (2085, 70, 263), (77, 96, 13)])
def test_mul_mat_wide_panels_bit_for_bit(K, M, N, wtype):
    """AVX-512 builds multiply batches in 12-column tiles where two 6-column tiles remain, two
    16-row panels at a time where a thread has them (mul_mat.c tg_panel_32x12: M = 64+ over 3
    threads), else one (tg_panel_16x12): the same outputs bit for bit as the 16 x 6 tiles, for
    partial row panels, an odd panel after the pairs, a leftover 6-column tile and a partial one
    (N = 13, 23, 29, 61, 263), k blocks (K = 2085) and sum blocks of 16, 32 and 64 values (K =
    77, 300 / 1000, 2085). GraphOptions.wide_gemm picks them; elsewhere it changes nothing and
    the test holds trivially."""
    rng = np.random.default_rng(K + M + N)
    dt = np.float16 if wtype == F16 else np.float32
    a = mk("a", rnd(rng, M, K, dtype=dt), type=wtype)
    b = mk("b", rnd(rng, N, K))
    narrow = check_op(ops.mul_mat(a, b, GraphOptions(wide_gemm=False)), 3, atol=1e-3).copy()
    wide = check_op(ops.mul_mat(a, b, GraphOptions(wide_gemm=True)), 3, atol=1e-3)   # against float64 too
    np.testing.assert_array_equal(wide, narrow)


@pytest.mark.parametrize("K", [64, 77])                 # 8-lane steps only / a scalar tail
@pytest.mark.parametrize("N", [2, 5, 9])
def test_mul_mat_small_f16_batches(simd, K, N):
    """F16 batches of 2-9 columns take 2 x 4 tiles on rows read in place (mul_mat.c
    tg_mul_mat_small_f16): against float64, the same for 1 and 3 threads bit for bit, and every
    output bit for bit what it is in the batch shifted by one column or one row (other
    partners, other tiles)."""
    rng = np.random.default_rng(K * 100 + N)
    a = mk("a", rnd(rng, 21, K, dtype=np.float16), type=F16)
    x = rnd(rng, N + 1, K)
    one = check_op(ops.mul_mat(a, mk("b", x[:N].copy())), 1, atol=1e-4, rtol=1e-4).copy()
    three = check_op(ops.mul_mat(a, mk("b", x[:N].copy())), 3, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(three, one)
    shifted = check_op(ops.mul_mat(a, mk("b", x[1:].copy())), 2, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(shifted[:N - 1], one[1:])
    # a row prepended: every row pairs with another row of the other half, or none
    a2 = mk("a2", np.concatenate([rnd(rng, 1, K, dtype=np.float16), a.data]), type=F16)
    rows = check_op(ops.mul_mat(a2, mk("b", x[:N].copy())), 2, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(rows[:, 1:], one)


@pytest.mark.parametrize("wtype", [F32, F16])
def test_mul_mat_batched_equals_column_by_column(simd, wtype):
    """The batched path (4x3 tiles) and the decode path (one column, row by row) agree to float
    rounding; columns of a batch do not depend on the tile they land in (bit for bit)."""
    rng = np.random.default_rng(21)
    dt = np.float16 if wtype == F16 else np.float32
    a = mk("a", rnd(rng, 23, 77, dtype=dt), type=wtype)
    x = rnd(rng, 71, 77)
    g = Graph()
    out = g.output(ops.mul_mat(a, mk("b", x)))
    plan = Plan(g, max_threads=2)
    plan.run(2)
    whole = plan.numpy(out).copy()
    for n in range(71):
        g1 = Graph()
        o1 = g1.output(ops.mul_mat(a, mk("b1", x[n:n + 1].copy())))
        p1 = Plan(g1, max_threads=1)
        p1.run(1)
        np.testing.assert_allclose(p1.numpy(o1).reshape(-1), whole[n], rtol=1e-5, atol=1e-5)
    for n0 in (0, 1, 2):                     # shift the batch: every column lands in other tiles
        g2 = Graph()
        o2 = g2.output(ops.mul_mat(a, mk("b2", x[n0:].copy())))
        p2 = Plan(g2, max_threads=2)
        p2.run(2)
        np.testing.assert_array_equal(p2.numpy(o2), whole[n0:])
