"""Qwen3.5's ops: the gated delta rule (gated_delta, token by token and in chunks) and the
sigmoid output gate (gate_sigmoid) against their float64 numpy references (ops.py), over
random shapes: value heads sharing key heads, head sizes with tails after the SIMD blocks,
several sequences of different lengths back to back with states carried in, chunks that do not
divide a sequence, strided inputs, 1-3 threads, SIMD and scalar."""
import dataclasses

import numpy as np
import pytest

from test_ops import THREADS, check_op, mk, rnd, simd  # noqa: F401 (simd: the fixture)
from tinyggml import ops
from tinyggml.backend import Plan
from tinyggml.graph import Graph
from tinyggml.ops import ShapeError
from tinyggml.options import GraphOptions
from tinyggml.tensor import I32, STATE


@pytest.mark.parametrize("shape", [(7,), (33, 5), (65, 3, 2)])
@pytest.mark.parametrize("nt", THREADS)
def test_gate_sigmoid(simd, shape, nt):
    rng = np.random.default_rng(len(shape) + nt)
    y = mk("y", rnd(rng, *reversed(shape), scale=3))
    z = mk("z", rnd(rng, *reversed(shape), scale=4))
    check_op(ops.gate_sigmoid(y, z), nt)
    # the gate as Qwen3.5 has it: every other head_dim block of the fused q projection rows
    fused = mk("fused", rnd(rng, 5, 2 * 4 * 16))
    g = ops.view(fused, (16, 4, 5), (4, 32 * 4, 2 * 4 * 16 * 4), 16 * 4)
    q = mk("q", rnd(rng, 5, 4, 16))
    check_op(ops.gate_sigmoid(q, g), nt)


def _delta_case(rng, dk, dv, nh, nk, lens, n_slots=4, strided=False):
    n_t = sum(lens)
    state = mk("state", rnd(rng, n_slots, nh, dv, dk, scale=0.5), flags=STATE)
    if strided:          # q, k, v inside one row of conv output, as the model's views are
        width = 2 * nk * dk + nh * dv + 3
        qkv = mk("qkv", rnd(rng, n_t, width, scale=1.5))
        q = ops.view(qkv, (dk, nk, n_t), (4, dk * 4, width * 4), 0)
        k = ops.view(qkv, (dk, nk, n_t), (4, dk * 4, width * 4), nk * dk * 4)
        v = ops.view(qkv, (dv, nh, n_t), (4, dv * 4, width * 4), 2 * nk * dk * 4)
    else:
        q, k = mk("q", rnd(rng, n_t, nk, dk, scale=1.5)), mk("k", rnd(rng, n_t, nk, dk, scale=1.5))
        v = mk("v", rnd(rng, n_t, nh, dv))
    ab = mk("ab", rnd(rng, n_t, 2 * nh, scale=2))
    alpha = ops.view(ab, (nh, n_t), (4, 2 * nh * 4), 0)
    b = ops.view(ab, (nh, n_t), (4, 2 * nh * 4), nh * 4)
    A = mk("A", -np.exp(rng.uniform(-1, 2, nh)).astype(np.float32))
    dt_bias = mk("dt_bias", rng.normal(0, 1, nh).astype(np.float32))
    info = np.zeros((n_slots, 3), np.int32)
    slots, t0 = rng.permutation(n_slots)[:len(lens)], 0
    for s, n in enumerate(lens):
        info[s] = (slots[s], t0, n)
        t0 += n
    return state, q, k, v, alpha, b, A, dt_bias, mk("seq_info", info, I32)


ALGOS = {"recurrent": GraphOptions(scan="recurrent"),
         "chunk5": GraphOptions(scan="chunked", delta_chunk=5),     # 1-row tiles, odd tails
         "chunk64": GraphOptions(scan="chunked", delta_chunk=64)}


@pytest.mark.parametrize("dk,dv,nh,nk", [(16, 16, 2, 2), (128, 128, 4, 2), (24, 20, 3, 1), (7, 9, 2, 1)])
@pytest.mark.parametrize("lens", [[1], [5, 1, 13], [70, 3]])
@pytest.mark.parametrize("algo", list(ALGOS))
@pytest.mark.parametrize("nt", THREADS)
def test_gated_delta(simd, dk, dv, nh, nk, lens, algo, nt):
    rng = np.random.default_rng(dk + dv + nh + len(lens) + nt)
    state, *args = _delta_case(rng, dk, dv, nh, nk, lens, strided=len(lens) > 1)
    out = ops.gated_delta(state, *args, opts=ALGOS[algo])
    # the state is updated in place; float32 sums over d_k per token (or over d_k and a chunk's
    # tokens), errors grow over the tokens
    check_op(out, nt, atol=5e-5, rtol=1e-4, states=(state,))


@pytest.mark.parametrize("dk,dv", [(128, 128), (24, 72)])
def test_gated_delta_chunked_wide_bit_for_bit(dk, dv):
    """The chunks' output and state blocks 32 columns wide on AVX-512 (GraphOptions.wide_scan)
    or 16: the same bits."""
    got = {}
    for wide in (False, True):
        state, *args = _delta_case(np.random.default_rng(dk + dv), dk, dv, 4, 2, [30, 1, 9], strided=True)
        out = ops.gated_delta(state, *args, opts=dataclasses.replace(ALGOS["chunk5"], wide_scan=wide))
        g = Graph()
        g.output(out)
        plan = Plan(g, max_threads=2)
        plan.run(2)
        got[wide] = (plan.numpy(out).copy(), state.data.copy())
    np.testing.assert_array_equal(got[True][0], got[False][0])
    np.testing.assert_array_equal(got[True][1], got[False][1])


def test_gated_delta_auto_picks_by_length():
    """"auto" runs a sequence of delta_min_len+ tokens in chunks, a shorter one token by token:
    each bit for bit what the forced algorithm gives."""
    def run(opts):
        rng = np.random.default_rng(11)
        state, *args = _delta_case(rng, 32, 24, 2, 1, [9, 3], strided=True)
        g = Graph()
        out = ops.gated_delta(state, *args, opts=opts)
        g.output(out)
        plan = Plan(g, max_threads=2)
        plan.run(2)
        slots = args[-1].data[:2, 0]                     # the two sequences' state slots
        return plan.numpy(out).reshape(12, 2, 24).copy(), state.data[slots].copy()

    auto, s_auto = run(GraphOptions(delta_chunk=4, delta_min_len=5))
    chunked, s_chunked = run(GraphOptions(scan="chunked", delta_chunk=4))
    recurrent, s_rec = run(GraphOptions(scan="recurrent"))
    np.testing.assert_array_equal(auto[:9], chunked[:9])
    np.testing.assert_array_equal(auto[9:], recurrent[9:])
    assert not np.array_equal(chunked[:9], recurrent[:9])    # the two really differ
    np.testing.assert_array_equal(s_auto[0], s_chunked[0])
    np.testing.assert_array_equal(s_auto[1], s_rec[1])
    assert not np.array_equal(s_chunked[0], s_rec[0])


@pytest.mark.parametrize("algo", ["recurrent", "chunk5"])
def test_gated_delta_pieces_equal_whole(algo):
    """A sequence fed in one ubatch or in pieces (its state carried between them): token by
    token the same arithmetic, so the same bits; in chunks, pieces cut the chunks elsewhere, so
    the same values to float32 rounding."""
    rng = np.random.default_rng(3)
    dk, dv, nh, nk, n = 32, 32, 4, 2, 23
    q_all, k_all = rnd(rng, n, nk, dk), rnd(rng, n, nk, dk)
    v_all, a_all, b_all = rnd(rng, n, nh, dv), rnd(rng, n, nh), rnd(rng, n, nh)
    A = -np.exp(rng.uniform(-1, 2, nh)).astype(np.float32)
    dtb = rng.normal(0, 1, nh).astype(np.float32)

    def run(pieces, nt):
        state = mk("state", np.zeros((1, nh, dv, dk), np.float32), flags=STATE)
        outs, t0 = [], 0
        for m in pieces:
            sl = slice(t0, t0 + m)
            out = ops.gated_delta(state, mk("q", q_all[sl].copy()), mk("k", k_all[sl].copy()),
                                  mk("v", v_all[sl].copy()), mk("a", a_all[sl].copy()),
                                  mk("b", b_all[sl].copy()), mk("A", A), mk("dtb", dtb),
                                  mk("info", np.array([[0, 0, m]], np.int32), I32), opts=ALGOS[algo])
            g = Graph()
            g.output(out)
            plan = Plan(g, max_threads=2)
            plan.run(nt)
            outs.append(plan.numpy(out).copy())
            t0 += m
        return np.concatenate([o.reshape(-1, nh, dv) for o in outs]), state.data.copy()

    whole, s_whole = run([n], 1)
    for pieces, nt in (([1] * n, 2), ([7, 1, 15], 2)):
        got, s_got = run(pieces, nt)
        if algo == "recurrent":
            np.testing.assert_array_equal(got, whole)
            np.testing.assert_array_equal(s_got, s_whole)
        else:
            np.testing.assert_allclose(got, whole, rtol=1e-4, atol=2e-6)
            np.testing.assert_allclose(s_got, s_whole, rtol=1e-4, atol=2e-6)


def test_gated_delta_shape_errors():
    with pytest.raises(ValueError, match="delta_chunk"):
        GraphOptions(delta_chunk=0)
    with pytest.raises(ValueError, match="delta_min_len"):
        GraphOptions(delta_min_len=0)
    rng = np.random.default_rng(0)
    state, q, k, v, alpha, b, A, dt_bias, info = _delta_case(rng, 8, 8, 3, 2, [2])
    with pytest.raises(ShapeError, match="multiple of key heads"):
        ops.gated_delta(state, q, k, v, alpha, b, A, dt_bias, info)
    state, q, k, v, alpha, b, A, dt_bias, info = _delta_case(rng, 8, 8, 2, 1, [2])
    with pytest.raises(ShapeError, match="gated_delta: v"):
        ops.gated_delta(state, q, k, q, alpha, b, A, dt_bias, info)
