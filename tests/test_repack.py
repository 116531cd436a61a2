"""Weights repacked at load (tinyggml/repack.py, kernels/repack.c): every kernel that reads a
packed weight gives what it gives on the file layout, bit for bit. The 16-row dots (VNNI; AVX2
for Q4_0 / Q4_K; decode and small batches) against the one-row and paired dots; prompts' panels and get_rows,
which gather packed rows, against the same kernels on unpacked rows. Row counts that leave a
partial group, K with and without the 8-block SIMD tail, 1-3 threads, SIMD and scalar."""
import gguf
import numpy as np
import pytest

from test_quant_kernels import random_blocks, simd  # noqa: F401 (fixture)
from tinyggml import ops
from tinyggml.backend import Plan, pack_rows, pack_supported, packed_max_cols, simd_enabled
from tinyggml.graph import Graph
from tinyggml.options import GraphOptions
from tinyggml.tensor import F32, I32, INPUT, Q4_0, Q4_K, Q5_0, Q6_K, Q8_0, leaf

PACKED_TYPES = [t for t in (Q4_0, Q8_0, Q4_K, Q6_K) if pack_supported(t)]
pytestmark = pytest.mark.skipif(not PACKED_TYPES, reason="this build has no repacked dots (AVX2 or AVX-512 VNNI)")
NAME = {t: gguf.GGMLQuantizationType(t).name for t in (Q4_0, Q8_0, Q4_K, Q6_K)}


def run(out, n_threads):
    g = Graph()
    g.output(out)
    p = Plan(g, max_threads=3)
    p.run(n_threads)
    mm = [t for t in g.nodes if t.op == ops.Op.MUL_MAT]
    return p.numpy(out).copy(), (p.mul_mat_path(mm[0]) if mm else None)


def weights(qt, K, M, seed):
    q = random_blocks(np.random.default_rng(seed), qt, M, K)
    plain = leaf(qt, (K, M), "w", INPUT, data=q)
    packed = leaf(qt, (K, M), "w", INPUT, data=q)
    packed.packed = pack_rows(qt, q, K, M)
    assert packed.packed.nbytes == q.nbytes and not np.array_equal(packed.packed, q.reshape(-1))
    return plain, packed


def ks(qt):
    # K-quants: 1 and 3 superblocks; Q4_0: 8-block groups only, 19 blocks (a tail of 3), 2 blocks;
    # Q8_0 (no tail: every block in lane c % 8): 8, 19 and 2 blocks
    return (256, 608, 64) if qt in (Q4_0, Q8_0) else (256, 768)


CASES = [(qt, K, M) for qt in PACKED_TYPES for K in ks(qt) for M in (16, 21, 37, 64)]


INT = GraphOptions(int_gemm=True)      # quantized columns however many (as on VNNI CPUs)


def alone(plain, x, nt=1):
    """Each column of x times the file-layout weight on its own (the one-row dots)."""
    K = x.shape[1]
    return np.stack([run(ops.mul_mat(plain, leaf(F32, (K, 1), "x1", INPUT, data=x[n:n + 1].copy()), INT),
                         nt)[0].reshape(-1) for n in range(x.shape[0])])


@pytest.mark.parametrize("qt,K,M", CASES, ids=[f"{NAME[q]}-{k}x{m}" for q, k, m in CASES])
@pytest.mark.parametrize("N", [1, 2, 3, 7, 11, 12, 13, 33, 79, 80])
def test_packed_mul_mat_equals_file_layout(simd, qt, K, M, N):  # noqa: F811
    """Decode (N = 1) and batches under this build's packed_max_cols() (the 16-row dots,
    PACKED_PASS columns at a time: 33 and 79 take several passes, the last one short): every
    column is what it is alone on the file layout, bit for bit; from there the pairs or panels,
    reading gathered rows, equal them on the file layout."""
    plain, packed = weights(qt, K, M, qt + K + M)
    x = np.random.default_rng(N).standard_normal((N, K)).astype(np.float32)
    small = N < packed_max_cols()
    if small:
        want = alone(plain, x)
    else:
        want, _ = run(ops.mul_mat(plain, leaf(F32, (K, N), "x", INPUT, data=x), INT), 2)
    for nt in (1, 2, 3):
        got, path = run(ops.mul_mat(packed, leaf(F32, (K, N), "x", INPUT, data=x), INT), nt)
        np.testing.assert_array_equal(got.reshape(want.shape), want)
    assert (path == "packed") == (simd_enabled() and small), path


@pytest.mark.parametrize("qt", PACKED_TYPES, ids=lambda t: NAME[t])
def test_packed_column_equals_its_batch(simd, qt):  # noqa: F811
    """A column of a small batch on packed rows equals that column alone."""
    K, M, N = (608 if qt in (Q4_0, Q8_0) else 512), 37, 5
    _, packed = weights(qt, K, M, 3)
    x = np.random.default_rng(4).standard_normal((N, K)).astype(np.float32)
    whole, _ = run(ops.mul_mat(packed, leaf(F32, (K, N), "x", INPUT, data=x)), 2)
    for n in range(N):
        one, _ = run(ops.mul_mat(packed, leaf(F32, (K, 1), "x1", INPUT, data=x[n:n + 1].copy())), 1)
        np.testing.assert_array_equal(one.reshape(-1), whole[n])


@pytest.mark.parametrize("qt", PACKED_TYPES, ids=lambda t: NAME[t])
@pytest.mark.parametrize("int_gemm", [False, True], ids=["float-gemm", "int-gemm"])
def test_packed_prompt_equals_file_layout(simd, qt, int_gemm):  # noqa: F811
    """Prompts' panels (float or integer) read packed rows gathered back: bit for bit."""
    K, M, N = 512, 37, ops.PACKED_MAX_COLS + 3
    plain, packed = weights(qt, K, M, 5)
    x = np.random.default_rng(6).standard_normal((N, K)).astype(np.float32)
    opts = GraphOptions(int_gemm=int_gemm)
    want, _ = run(ops.mul_mat(plain, leaf(F32, (K, N), "x", INPUT, data=x), opts), 2)
    got, _ = run(ops.mul_mat(packed, leaf(F32, (K, N), "x", INPUT, data=x), opts), 2)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("qt", PACKED_TYPES, ids=lambda t: NAME[t])
@pytest.mark.parametrize("nt", [1, 2])
def test_packed_get_rows_equals_file_layout(simd, qt, nt):  # noqa: F811
    """get_rows of a packed weight (a tied embedding): rows in full groups and past them."""
    plain, packed = weights(qt, 512, 37, 7)
    ids = np.array([36, 0, 15, 16, 33, 31], np.int32)
    want, _ = run(ops.get_rows(plain, leaf(I32, (6,), "ids", INPUT, data=ids)), nt)
    got, _ = run(ops.get_rows(packed, leaf(I32, (6,), "ids", INPUT, data=ids)), nt)
    np.testing.assert_array_equal(got, want)


def test_pack_supported_types():
    assert not pack_supported(F32) and not pack_supported(Q5_0)
    assert all(pack_supported(t) for t in PACKED_TYPES)
    assert 1 < packed_max_cols() <= ops.PACKED_MAX_COLS     # ops sizes the scratch for the most


# rows of 256 and 512 values: whole Q4_0 8-block runs and Q4_K / Q6_K superblocks
SMALL = {"mamba": dict(arch="mamba", n_embd=256, n_layer=2, d_state=16, n_vocab=3000),
         "mamba2": dict(arch="mamba2", n_embd=256, n_layer=2, d_state=32, head_dim=32, n_group=1,
                        n_vocab=3000)}


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
@pytest.mark.parametrize("wtype", ["q4_0", "q8_0", "q4_k"])
def test_batched_decode_equals_one_by_one(tmp_path, monkeypatch, arch, wtype):
    """On repacked weights a decode step of several sequences gives each sequence the logits it
    gets decoded alone, bit for bit (the projections on the 16-row dots, n columns at a time
    against 1). 9 sequences where the Q6_K head is repacked too (AVX-512 VNNI); else 5, which
    keeps the head on its one-column QACT_K dots (under ops.QUANT_PANEL_MIN_COLS)."""
    import tinyggml
    from tinyggml.tools import make_model as mm
    if not pack_supported(getattr(gguf.GGMLQuantizationType, wtype.upper())):
        pytest.skip(f"{wtype} is not repacked on this build")
    n_seq = 9 if pack_supported(Q6_K) else ops.QUANT_PANEL_MIN_COLS - 1
    monkeypatch.setitem(mm.PRESETS, "small", SMALL[arch])
    path = tmp_path / "m.gguf"
    mm.make_model("small", path, wtype, progress=False)
    m = tinyggml.Model(str(path), n_threads=2, n_seq_max=n_seq)
    assert m.packed_bytes > 0
    prompts = {s: [1 + 7 * s + i for i in range(2 + s % 3)] for s in range(n_seq)}
    for s in range(n_seq):          # each state as the one-by-one run below leaves it
        m.eval(prompts[s], seq_id=s, logits="last")
    step = {s: [300 + s] for s in range(n_seq)}
    together = m.eval_batch(step, logits="last")
    for s in range(n_seq):
        m.reset(s)
        m.eval(prompts[s], seq_id=s, logits="last")
        np.testing.assert_array_equal(m.eval(step[s], seq_id=s, logits="last"), together[s])


@pytest.mark.parametrize("preset", ["mamba-tiny", "mamba2-tiny"])
def test_model_repacked_equals_file_layout(tmp_path, preset):
    """A model decoding on repacked weights gives the logits of the file layout, bit for bit
    (prompt, decode steps, a batch of sequences). The 130m presets: the same, checked in the
    benchmarks' runs (docs/benchmark-log.md)."""
    import tinyggml
    from tinyggml.tools.make_model import make_model
    path = tmp_path / "m.gguf"
    make_model(preset, path, "q4_0", progress=False)   # K of 64 / 128: 2 or 4 blocks, all tail
    outs = []
    for repack in (False, True):
        m = tinyggml.Model(str(path), n_threads=2, repack=repack)
        assert (m.packed_bytes > 0) == repack
        got = [m.eval([1, 50, 200], logits="all")] + [m.eval([t], logits="last") for t in (3000, 7)]
        batch = m.eval_batch({1: [5], 2: [9, 4], 3: [11]}, logits="last")
        outs.append(got + [batch[k] for k in (1, 2, 3)])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
