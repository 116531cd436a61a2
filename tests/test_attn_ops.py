"""The attention ops of hybrid models (rope, kv_store, attn) and relu_sqr against their numpy
float64 references (ops.py), over random shapes: odd head sizes, grouped-query heads, several
sequences of different lengths and depths back to back in one ubatch, F32 and F16 caches,
strided inputs, 1-3 threads, SIMD and scalar."""
import numpy as np
import pytest

from test_ops import THREADS, check_op, mk, rnd, simd  # noqa: F401 (simd: the fixture)
from tinyggml import ops
from tinyggml.backend import Plan
from tinyggml.graph import Graph
from tinyggml.ops import ShapeError
from tinyggml.tensor import F16, F32, I32, STATE


@pytest.mark.parametrize("shape", [(7,), (33, 5), (65, 3, 2)])
@pytest.mark.parametrize("nt", THREADS)
def test_relu_sqr(simd, shape, nt):
    rng = np.random.default_rng(len(shape) + nt)
    check_op(ops.relu_sqr(mk("a", rnd(rng, *reversed(shape), scale=3))), nt)


@pytest.mark.parametrize("hd,n_rot,nh", [(8, 8, 3), (64, 64, 4), (80, 32, 2), (6, 4, 5)])
@pytest.mark.parametrize("mode", [ops.ROPE_NORM, ops.ROPE_NEOX])
@pytest.mark.parametrize("nt", THREADS)
def test_rope(simd, hd, n_rot, nh, mode, nt):
    rng = np.random.default_rng(hd + nh + mode + nt)
    n_t = 11
    pos = mk("pos", rng.integers(0, 40000, n_t).astype(np.int32), I32)
    x = mk("x", rnd(rng, n_t, nh, hd, scale=2))
    # angles up to 4e4 rad: the double angles keep the float result to a few ulp
    check_op(ops.rope(x, pos, n_rot, mode, 10000.0), nt, atol=2e-5)
    check_op(ops.rope(x, pos, n_rot, mode, 500000.0, 0.25), nt, atol=2e-5)
    # a strided view: the query heads inside fused projection rows
    big = mk("big", rnd(rng, n_t, 3 * nh * hd))
    q = ops.view(big, (hd, nh, n_t), (4, hd * 4, 3 * nh * hd * 4), nh * hd * 4)
    check_op(ops.rope(q, pos, n_rot, mode, 10000.0), nt, atol=2e-5)


def _attn_case(rng, hd, nh, nkv, lens, past, cache_type, n_ctx=160, n_slots=4, head_major=False):
    """Caches holding earlier tokens of each slot, and one ubatch of new tokens. head_major: the
    caches as HybridMemory keeps them, (slot, head, position, hd), seen through a view with the
    head and position strides swapped."""
    n_t = sum(lens)
    dt = np.float16 if cache_type == F16 else np.float32
    if head_major:
        elt = np.dtype(dt).itemsize
        nb = (elt, n_ctx * hd * elt, hd * elt, nkv * n_ctx * hd * elt)
        kc, vc = (ops.view(mk(n, rnd(rng, n_slots, nkv, n_ctx, hd).astype(dt), cache_type, STATE),
                           (hd, nkv, n_ctx, n_slots), nb) for n in ("kc", "vc"))
    else:
        kc = mk("kc", rnd(rng, n_slots, n_ctx, nkv, hd).astype(dt), cache_type, STATE)
        vc = mk("vc", rnd(rng, n_slots, n_ctx, nkv, hd).astype(dt), cache_type, STATE)
    slots = rng.permutation(n_slots)[:len(lens)]
    info = np.zeros((n_slots, 3), np.int32)
    pos = np.zeros(n_t, np.int32)
    t0 = 0
    for s, (n, p) in enumerate(zip(lens, past)):
        info[s] = (slots[s], t0, n)
        pos[t0:t0 + n] = p + np.arange(n)
        t0 += n
    info_t = mk("seq_info", info, I32)        # rows past the sequences: 0 tokens, no effect
    pos_t = mk("pos", pos, I32)
    q = mk("q", rnd(rng, n_t, nh, hd))
    k = mk("k", rnd(rng, n_t, nkv, hd))
    v = mk("v", rnd(rng, n_t, nkv, hd))
    return q, k, v, kc, vc, info_t, pos_t


@pytest.mark.parametrize("hd,nh,nkv", [(8, 4, 4), (64, 8, 2), (20, 6, 1), (33, 3, 3), (128, 4, 2),
                                       (72, 2, 1)])
@pytest.mark.parametrize("lens,past", [([1], [0]), ([5, 1, 13], [0, 7, 70]), ([1, 1, 1], [3, 150, 64]),
                                       ([20], [100])])
@pytest.mark.parametrize("cache_type", [F32, F16])
@pytest.mark.parametrize("nt", [1, 3])
def test_attn_over_cache(simd, hd, nh, nkv, lens, past, cache_type, nt):
    rng = np.random.default_rng(hd + nh + len(lens) + nt)
    q, k, v, kc, vc, info, pos = _attn_case(rng, hd, nh, nkv, lens, past, cache_type)
    ks = ops.kv_store(kc, k, info, pos)
    vs = ops.kv_store(vc, v, info, pos)
    out = ops.attn(q, ks, vs, info, pos, 1.0 / np.sqrt(hd))
    # the caches are written in place (every slot's other positions untouched), then read
    check_op(out, nt, atol=2e-5, rtol=1e-4, states=(kc, vc))


@pytest.mark.parametrize("cache_type", [F32, F16])
@pytest.mark.parametrize("hd,nkv", [(64, 2), (20, 3)])
def test_attn_over_head_major_cache(simd, cache_type, hd, nkv):
    """The caches as the model's memory lays them out (a head's positions contiguous), through
    the strided view: kv_store and attn against float64, the caches updated in place."""
    rng = np.random.default_rng(hd + nkv)
    q, k, v, kc, vc, info, pos = _attn_case(rng, hd, 2 * nkv, nkv, [5, 1, 13], [0, 70, 7], cache_type,
                                            head_major=True)
    out = ops.attn(q, ops.kv_store(kc, k, info, pos), ops.kv_store(vc, v, info, pos), info, pos,
                   1.0 / np.sqrt(hd))
    check_op(out, 2, atol=2e-5, rtol=1e-4, states=(kc.view_src, vc.view_src))


@pytest.mark.parametrize("wide", [True, False])
@pytest.mark.parametrize("hd", [64, 136])
def test_attn_key_by_key_and_eight_at_a_time(hd, wide):
    """Both SIMD attention paths (backend.set_attn_wide: scores of eight keys at once and the
    value sums in registers, or key by key) against float64, over a depth that is not a
    multiple of the key groups and a head size with a tail after its 64-column passes."""
    from tinyggml.backend import set_attn_wide
    rng = np.random.default_rng(hd)
    q, k, v, kc, vc, info, pos = _attn_case(rng, hd, 6, 2, [3, 1], [97, 140], F16, n_ctx=200)
    out = ops.attn(q, ops.kv_store(kc, k, info, pos), ops.kv_store(vc, v, info, pos), info, pos,
                   1.0 / np.sqrt(hd))
    prev = set_attn_wide(wide)
    try:
        check_op(out, 2, atol=2e-5, rtol=1e-4)
    finally:
        set_attn_wide(prev)


def test_kv_store_f16_rounds_as_numpy(simd):
    """The F16 cells hold exactly numpy's float16 rounding (to nearest even), incl. values
    beyond half's range, subnormals and halfway cases."""
    rng = np.random.default_rng(5)
    special = np.array([65519.0, 65520.0, 1e6, -1e6, 6e-8, 3e-8, 2.98e-8, 1e-10, 0.0, -0.0,
                        1 + 2 ** -11, 1 + 3 * 2 ** -11, 6.1e-5, np.inf, -np.inf], np.float32)
    vals = np.concatenate([special, rnd(rng, 64 - len(special), scale=3)])
    x = mk("x", vals.reshape(1, 1, 64))
    cache = mk("c", np.zeros((1, 2, 1, 64), np.float16), F16, STATE)
    info = mk("seq_info", np.array([[0, 0, 1]], np.int32), I32)
    pos = mk("pos", np.array([1], np.int32), I32)
    g = Graph()
    g.output(ops.kv_store(cache, x, info, pos))
    Plan(g).run(1)
    with np.errstate(over="ignore"):                     # 65520 and beyond: inf on purpose
        want = vals.astype(np.float16)
    np.testing.assert_array_equal(cache.data[0, 1, 0].view(np.uint16), want.view(np.uint16))
    assert not cache.data[0, 0].any()


def test_attn_results_do_not_depend_on_the_ubatch():
    """A token's attention output is the same bit for bit whether its sequence's tokens come
    in one ubatch or one by one (the key blocks start at position 0 either way), and whatever
    the thread count."""
    rng = np.random.default_rng(9)
    hd, nh, nkv, n = 32, 4, 2, 150
    q_all, k_all, v_all = (rnd(rng, n, h, hd) for h in (nh, nkv, nkv))

    def run(pieces, nt):
        kc = mk("kc", np.zeros((1, 256, nkv, hd), np.float32), F32, STATE)
        vc = mk("vc", np.zeros((1, 256, nkv, hd), np.float32), F32, STATE)
        outs, t0 = [], 0
        for m in pieces:
            info = mk("seq_info", np.array([[0, 0, m]], np.int32), I32)
            pos = mk("pos", np.arange(t0, t0 + m, dtype=np.int32), I32)
            q, k, v = (mk(nm, a[t0:t0 + m].copy()) for nm, a in (("q", q_all), ("k", k_all), ("v", v_all)))
            out = ops.attn(q, ops.kv_store(kc, k, info, pos), ops.kv_store(vc, v, info, pos), info, pos, 0.3)
            g = Graph()
            g.output(out)
            plan = Plan(g, max_threads=2)
            plan.run(nt)
            outs.append(plan.numpy(out).copy().reshape(m, nh, hd))
            t0 += m
        return np.concatenate(outs)

    whole = run([n], 1)
    np.testing.assert_array_equal(whole, run([1] * n, 2))
    np.testing.assert_array_equal(whole, run([7, 64, 1, 78], 2))


def test_attn_shape_errors():
    rng = np.random.default_rng(1)
    q, k, v, kc, vc, info, pos = _attn_case(rng, 8, 6, 4, [3], [0], F32)
    with pytest.raises(ShapeError, match="kv heads"):
        ops.attn(q, kc, vc, info, pos, 1.0)              # 6 heads over 4 kv heads
    with pytest.raises(ShapeError, match="n_rot"):
        ops.rope(q, pos, 10, ops.ROPE_NORM, 1e4)
    with pytest.raises(ShapeError, match="cache"):
        ops.kv_store(kc, mk("k2", rnd(rng, 3, 4, 16)), info, pos)
    # the kernel reads both caches with the key cache's row stride: a value cache laid out
    # otherwise (here head-major beside a position-major key cache) is refused
    q, k, v, kc, vc, info, pos = _attn_case(rng, 8, 4, 2, [3], [0], F32)
    hm = ops.view(mk("vhm", np.zeros(tuple(reversed((kc.ne[0], kc.ne[2], kc.ne[1], kc.ne[3]))), np.float32)),
                  kc.ne, (4, kc.ne[2] * kc.ne[0] * 4, kc.ne[0] * 4, kc.nb[3]), 0)
    assert hm.ne == kc.ne and hm.nb != kc.nb
    with pytest.raises(ShapeError, match="k and v caches differ"):
        ops.attn(q, kc, hm, info, pos, 1.0)
