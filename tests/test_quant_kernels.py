"""Quantized weights in the C kernels against gguf-py's dequantization + float64.

Every bit pattern of a block is a valid block once its float16 scale fields are finite, so the
weights here are random bytes with sane scales: that exercises every unpack path (all nibble /
high-bit / scale-packing combinations) against the `gguf` package's own dequantizer.
get_rows must equal the dequantized rows; mul_mat must equal the float64 reference computed on
the dequantized weights and the activations as quantized (QACT: int16, one scale per 32
values), and stay close to the unquantized-activation product."""
import gguf
import numpy as np
import pytest

from tinyggml import ops
from tinyggml.backend import Plan, set_simd, simd_compiled
from tinyggml.graph import Graph
from tinyggml.options import GraphOptions
from tinyggml.tensor import (BF16, BLOCK, F32, I32, INPUT, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1,
                             Q5_K, Q6_K, Q8_0, QUANTIZED, leaf)

# byte offsets of the float16 scale fields in each block
F16_FIELDS = {Q4_0: [0], Q4_1: [0, 2], Q5_0: [0], Q5_1: [0, 2], Q8_0: [0], Q2_K: [80, 82],
              Q3_K: [108], Q4_K: [0, 2], Q5_K: [0, 2], Q6_K: [208]}
SIMD = [True, False] if simd_compiled() else [False]


@pytest.fixture(params=SIMD, ids=lambda s: "simd" if s else "scalar")
def simd(request):
    set_simd(request.param)
    yield
    set_simd(True)


def random_blocks(rng, qt, rows, K):
    blck, size = BLOCK[qt]
    raw = rng.integers(0, 256, size=(rows, K // blck, size), dtype=np.uint8)
    for off in F16_FIELDS[qt]:
        scale = (rng.uniform(0.5, 1.5, size=(rows, K // blck)) * (0.02 if blck == 256 else 0.1))
        raw[:, :, off:off + 2] = scale.astype(np.float16).view(np.uint8).reshape(rows, K // blck, 2)
    return raw.reshape(rows, -1)


def dequant(q, qt):
    return gguf.quants.dequantize(q, gguf.GGMLQuantizationType(qt)).astype(np.float64)


def run(out, n_threads):
    g = Graph()
    g.output(out)
    ref = g.compute_numpy()[id(out)]
    p = Plan(g, max_threads=3)
    p.run(n_threads)
    return p.numpy(out), ref.reshape(p.numpy(out).shape)


@pytest.mark.parametrize("qt", QUANTIZED, ids=lambda t: gguf.GGMLQuantizationType(t).name)
@pytest.mark.parametrize("nt", [1, 2, 3])
def test_get_rows_equals_gguf_dequantize(simd, qt, nt):
    rng = np.random.default_rng(qt)
    K = 512
    q = random_blocks(rng, qt, 9, K)
    w = leaf(qt, (K, 9), "w", INPUT, data=q)
    ids = leaf(I32, (5,), "ids", INPUT, data=np.array([8, 0, 3, 3, 5], np.int32))
    got, _ = run(ops.get_rows(w, ids), nt)
    np.testing.assert_allclose(got, dequant(q, qt)[[8, 0, 3, 3, 5]], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("qt", QUANTIZED, ids=lambda t: gguf.GGMLQuantizationType(t).name)
@pytest.mark.parametrize("M,N", [(1, 1), (7, 3), (33, 5), (9, 20), (16, 6), (17, 13)])   # N >= 6: panels
@pytest.mark.parametrize("nt", [1, 2, 3])
@pytest.mark.parametrize("blocks", ["16", "odd"])
def test_mul_mat_quantized(simd, qt, M, N, nt, blocks):
    rng = np.random.default_rng(qt * 100 + M + N)
    # 16 blocks of 32, or a count that leaves the 8-block SIMD loops a tail (3 superblocks / 19 blocks)
    K = 512 if blocks == "16" else (768 if gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qt)][0] == 256 else 608)
    q = random_blocks(rng, qt, M, K)
    x = rng.standard_normal((N, K)).astype(np.float32)
    a = leaf(qt, (K, M), "w", INPUT, data=q)
    b = leaf(F32, (K, N), "x", INPUT, data=x)
    got, ref = run(ops.mul_mat(a, b), nt)
    scale = np.abs(ref).max()
    # against the reference with the same activation quantization: float rounding only
    np.testing.assert_allclose(got, ref, atol=2e-5 * scale, rtol=0)
    # and the 8-bit activations stay close to the exact product
    wd = dequant(q, qt)
    exact = x.astype(np.float64) @ wd.T
    # relative to the typical size of a dot of these rows (|x| |w| / sqrt(K)), so that a single
    # output that happens to be near zero does not decide
    typical = np.mean(np.sum(x.astype(np.float64) ** 2, 1)) * np.mean(np.sum(wd ** 2, 1)) / K
    rel = np.sqrt(np.mean((got - exact) ** 2) / typical)
    assert rel < 1e-4, rel


def test_bf16_weights(simd):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((13, 96)).astype(np.float32)
    raw = (W.view(np.uint32) >> 16).astype(np.uint16)            # truncated to bf16
    wf = (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    x = rng.standard_normal((4, 96)).astype(np.float32)
    a = leaf(BF16, (96, 13), "w", INPUT, data=raw.view(np.uint8).reshape(13, -1))
    got, _ = run(ops.mul_mat(a, leaf(F32, (96, 4), "x", INPUT, data=x)), 2)
    np.testing.assert_allclose(got, x.astype(np.float64) @ wf.T, rtol=1e-5, atol=1e-4)
    ids = leaf(I32, (2,), "ids", INPUT, data=np.array([12, 1], np.int32))
    got, _ = run(ops.get_rows(a, ids), 1)
    np.testing.assert_array_equal(got, wf[[12, 1]].astype(np.float32))


@pytest.mark.parametrize("qt", [Q4_0, Q8_0, Q4_K, Q6_K, Q2_K, Q5_1],
                         ids=lambda t: gguf.GGMLQuantizationType(t).name)
@pytest.mark.parametrize("int_gemm", [False, True], ids=["float-gemm", "int-gemm"])
def test_quantized_batch_equals_column_by_column(simd, qt, int_gemm):
    """A batch (the integer panels with int_gemm, else widened rows on the float panels)
    and each column alone (the decode dots) agree to float rounding; a column's result does
    not depend on the tile or thread it lands in."""
    from tinyggml.backend import int_gemm_compiled
    if int_gemm and not int_gemm_compiled():
        pytest.skip("this build has no integer GEMM (portable scalar build)")
    opts = GraphOptions(int_gemm=int_gemm)
    rng = np.random.default_rng(qt)
    # the integer panels take batches of 6 to int_gemm_min_cols - 1 columns (every batch with
    # int_gemm), the float panels the wider ones: each case on its own side
    K, M, N = 512, 37, 23 if int_gemm else opts.int_gemm_min_cols + 5
    assert 6 <= N < opts.int_gemm_min_cols or not int_gemm
    q = random_blocks(rng, qt, M, K)
    x = rng.standard_normal((N, K)).astype(np.float32)
    a = leaf(qt, (K, M), "w", INPUT, data=q)
    whole, _ = run(ops.mul_mat(a, leaf(F32, (K, N), "x", INPUT, data=x), opts), 2)
    scale = np.abs(whole).max()
    # without the integer GEMM a batch of >= 48 multiplies float activations, a single column
    # int16-quantized ones, and a single Q6_K column has one activation scale per 256 values
    # (QACT_K), not per 32: then they differ by the activation rounding too (~1e-5 relative)
    same_act = (int_gemm or N < opts.int_gemm_min_cols) and qt != Q6_K
    tol = 1e-5 if same_act else 1e-4
    for n in range(N):
        one, _ = run(ops.mul_mat(a, leaf(F32, (K, 1), "x1", INPUT, data=x[n:n + 1].copy())), 1)
        np.testing.assert_allclose(one.reshape(-1), whole[n], atol=tol * scale, rtol=0)
    shifted, _ = run(ops.mul_mat(a, leaf(F32, (K, N - 1), "x2", INPUT, data=x[1:].copy()), opts), 3)
    np.testing.assert_array_equal(shifted, whole[1:])     # other tiles, other threads: bit for bit


@pytest.mark.parametrize("qt", [Q4_0, Q8_0, Q4_K, Q6_K, Q2_K, Q5_1],
                         ids=lambda t: gguf.GGMLQuantizationType(t).name)
@pytest.mark.parametrize("M,N", [(37, 12), (16, 29), (21, 61), (80, 29), (101, 12)])
def test_int_gemm_wide_tiles_bit_for_bit(qt, M, N):
    """AVX-512 builds run the integer panels in 12-column tiles of 512-bit registers while 12
    columns remain, two 16-row panels at a time where a thread has them (mul_mat.c
    tg_qpanel_tile32x12), else one (tg_qpanel_tile12): the same outputs bit for bit as the
    6-column tiles (scale groups of 32 and 16, types with and without mins, partial row panels,
    an odd panel after the pairs, leftover columns). AVX2 builds: 6-column tiles against 3."""
    from tinyggml.backend import int_gemm_compiled
    if not int_gemm_compiled():
        pytest.skip("this build has no integer GEMM (portable scalar build)")
    rng = np.random.default_rng(qt * 10 + N)
    K = 512
    q = random_blocks(rng, qt, M, K)
    x = rng.standard_normal((N, K)).astype(np.float32)
    a = leaf(qt, (K, M), "w", INPUT, data=q)
    got = {}
    for wide in (False, True):
        opts = GraphOptions(int_gemm=True, wide_gemm=wide)
        got[wide], ref = run(ops.mul_mat(a, leaf(F32, (K, N), "x", INPUT, data=x), opts), 2)
    np.testing.assert_allclose(got[True], ref, atol=2e-5 * np.abs(ref).max(), rtol=0)
    np.testing.assert_array_equal(got[True], got[False])


# K of 19 blocks only for the types with blocks of 32 (the K-quants need whole superblocks)
AMX_CASES = [(qt, K, M, N) for qt in (Q4_0, Q8_0, Q4_K, Q6_K, Q2_K, Q5_1)
             for K, M, N in [(512, 37, 23), (256, 16, 16), (768, 101, 61), (256, 5, 90), (608, 20, 33)]
             if K % 256 == 0 or qt in (Q4_0, Q8_0, Q5_1)]


@pytest.mark.parametrize("qt,K,M,N", AMX_CASES,
                         ids=[f"{gguf.GGMLQuantizationType(c[0]).name}-{c[1]}x{c[2]}x{c[3]}" for c in AMX_CASES])
def test_amx_tiles_bit_for_bit(qt, K, M, N):
    """AMX builds multiply the integer panels on AMX tiles (GraphOptions.amx): the high and low
    bytes of the int16 activations in two tile products per scale group (32 or 16 values), then
    the VNNI tiles' float steps, so the outputs equal theirs bit for bit (partial row panels,
    columns past the last block of 16, an odd count of blocks, K of 19 blocks, 1-3 threads)."""
    from tinyggml.backend import amx_available
    if not amx_available():
        pytest.skip("no AMX here (an AMX CPU, a -march=native build and the kernel's permission)")
    rng = np.random.default_rng(qt * 100 + N)
    q = random_blocks(rng, qt, M, K)
    x = rng.standard_normal((N, K)).astype(np.float32)
    a = leaf(qt, (K, M), "w", INPUT, data=q)
    want, ref = run(ops.mul_mat(a, leaf(F32, (K, N), "x", INPUT, data=x), GraphOptions(int_gemm=True)), 2)
    np.testing.assert_allclose(want, ref, atol=2e-5 * np.abs(ref).max(), rtol=0)
    for nt in (1, 2, 3):
        got, _ = run(ops.mul_mat(a, leaf(F32, (K, N), "x", INPUT, data=x),
                                 GraphOptions(int_gemm=True, amx=True)), nt)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("qt", [Q4_0, Q8_0, Q4_K, Q6_K, Q5_1],
                         ids=lambda t: gguf.GGMLQuantizationType(t).name)
def test_decode_rows_in_4_streams(simd, qt):
    """Decode (one column) reads each thread's rows in 4 quarters side by side (mul_mat.c tg_mul_mat_qdots:
    Q4_0, Q8_0, Q4_K, Q6_K; Q5_1 keeps one row at a time): against float64, and every row bit
    for bit the same whatever the thread count and wherever it lands (the matrix shifted by one
    row moves every row into another quarter or stream)."""
    rng = np.random.default_rng(qt + 7)
    K = 768 if BLOCK[qt][0] == 256 else 608          # 3 superblocks / 19 blocks: SIMD tails
    q = random_blocks(rng, qt, 48, K)
    x = leaf(F32, (K, 1), "x", INPUT, data=rng.standard_normal((1, K)).astype(np.float32))
    one, ref = run(ops.mul_mat(leaf(qt, (K, 47), "w", INPUT, data=q[1:].copy()), x), 1)
    np.testing.assert_allclose(one, ref, atol=2e-5 * np.abs(ref).max(), rtol=0)
    for nt in (2, 3):
        got, _ = run(ops.mul_mat(leaf(qt, (K, 47), "w", INPUT, data=q[1:].copy()), x), nt)
        np.testing.assert_array_equal(got, one)
    shifted, _ = run(ops.mul_mat(leaf(qt, (K, 48), "w", INPUT, data=q), x), 2)
    np.testing.assert_array_equal(shifted[..., 1:], one)


# Q4_0: 8-block groups only / a tail of 3 blocks, up to 11 columns (its dot2x4_max_n); Q4_K: 2
# and 3 superblocks, up to 7 columns; Q8_0: up to 11 columns; odd N leave a last column alone
PAIR_CASES = [(Q4_0, K, N) for K in (512, 608) for N in (2, 7, 11)] + \
             [(Q4_K, K, N) for K in (512, 768) for N in (2, 5, 7)] + \
             [(Q8_0, K, N) for K in (96, 768) for N in (2, 8, 11)]


@pytest.mark.parametrize("qt,K,N", PAIR_CASES,
                         ids=[f"{gguf.GGMLQuantizationType(q).name}-{k}-{n}" for q, k, n in PAIR_CASES])
def test_column_pairs_equal_single_columns(simd, qt, K, N):
    """Small Q4_0 / Q4_K / Q8_0 batches dot two columns per pass over a row (the type table's dot2x4_max_n): every
    column equals that column alone (the decode dot) bit for bit, whatever its partner."""
    rng = np.random.default_rng(K + N + qt)
    M = 21
    q = random_blocks(rng, qt, M, K)
    x = rng.standard_normal((N, K)).astype(np.float32)
    a = leaf(qt, (K, M), "w", INPUT, data=q)
    whole, ref = run(ops.mul_mat(a, leaf(F32, (K, N), "x", INPUT, data=x)), 2)
    np.testing.assert_allclose(whole, ref, atol=2e-5 * np.abs(ref).max(), rtol=0)
    for n in range(N):
        one, _ = run(ops.mul_mat(a, leaf(F32, (K, 1), "x1", INPUT, data=x[n:n + 1].copy())), 1)
        np.testing.assert_array_equal(one.reshape(-1), whole[n])


@pytest.mark.parametrize("qt", [Q4_0, Q4_K, Q6_K, Q8_0], ids=lambda t: gguf.GGMLQuantizationType(t).name)
def test_quantized_k_blocked(simd, qt):
    """Quantized rows longer than 2048 times 256+ columns go through the float panels in k
    blocks of 1024 (each block of a row dequantized from its own offset): against the float64
    product of the dequantized weights, and bit for bit against a batch of 255 (not blocked)."""
    opts = GraphOptions(int_gemm=False)
    rng = np.random.default_rng(qt + 7)
    K, M, N = 2304, 19, 260
    assert opts.mm_kblock(K, N) == opts.mm_kc < K and opts.mm_kblock(K, N - 5) == 0   # blocked; N - 5 not
    q = random_blocks(rng, qt, M, K)
    x = rng.standard_normal((N, K)).astype(np.float32)
    a = leaf(qt, (K, M), "w", INPUT, data=q)
    got, _ = run(ops.mul_mat(a, leaf(F32, (K, N), "x", INPUT, data=x), opts), 2)
    exact = x.astype(np.float64) @ dequant(q, qt).T
    np.testing.assert_allclose(got, exact, atol=1e-5 * np.abs(exact).max(), rtol=0)
    part, _ = run(ops.mul_mat(a, leaf(F32, (K, N - 5), "x2", INPUT, data=x[5:].copy()), opts), 3)
    np.testing.assert_array_equal(part, got[5:])
