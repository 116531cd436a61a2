"""The runtime on small random GGUFs written by the tests (no shared fixtures needed), against
the independent float64 numpy reference model (tests/reference/mamba_np.py)."""
import numpy as np
import pytest

import tinyggml
from conftest import close
from reference.mamba_np import RefModel
from tinyggml.backend import set_simd, simd_compiled
from tinyggml.tools.testing import write_random_model


# odd sizes on purpose, so SIMD tails and group/head splits are exercised
CONFIGS = {
    "mamba1": dict(arch="mamba", n_embd=40, n_layer=2, d_state=12, n_vocab=301),
    "falcon-f16": dict(arch="mamba", n_embd=48, n_layer=2, d_state=16, n_vocab=263,
                       dt_b_c_rms=True, wtype="f16"),
    "mamba2": dict(arch="mamba2", n_embd=48, n_layer=2, d_state=24, head_dim=12, n_vocab=320),
    "mamba2-g2-f16-untied": dict(arch="mamba2", n_embd=40, n_layer=3, d_state=20, head_dim=10,
                                 n_group=2, n_vocab=288, tied=False, wtype="f16"),
}


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    files = {}
    for i, (name, cfg) in enumerate(CONFIGS.items()):
        files[name] = d / f"{name}.gguf"
        write_random_model(files[name], seed=100 + i, **cfg)
    return files


@pytest.fixture(params=sorted(CONFIGS))
def case(request, model_files):
    path = model_files[request.param]
    return request.param, tinyggml.Model(path, n_threads=2), RefModel(path)


def tokens(n, vocab, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=n)


def test_logits_match_float64_reference(case):
    name, m, ref = case
    t = tokens(19, m.n_vocab)
    got = m.eval(t)
    want, _, _ = ref.forward(t)
    scale = np.abs(want).max()
    assert got.shape == (19, m.n_vocab) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-5 * max(1.0, scale), rtol=0, err_msg=name)


def test_residual_stream_matches_reference(case):
    name, m, ref = case
    t = tokens(7, m.n_vocab, 1)
    _, hidden = m.eval_hidden(t)
    _, want, _ = ref.forward(t)
    np.testing.assert_allclose(hidden, want, atol=2e-5 * max(1.0, np.abs(want).max()), rtol=0)


@pytest.mark.parametrize("chunk", [3, 7, 1])
def test_chunks_equal_whole(case, chunk):
    _, m, _ = case
    t = tokens(23, m.n_vocab, 2)
    whole = m.eval(t)
    m.reset()
    parts = np.concatenate([m.eval(t[i:i + chunk]) for i in range(0, len(t), chunk)])
    close(parts, whole)


def test_eval_batch_equals_separate(case):
    _, m, _ = case
    seqs = {0: tokens(9, m.n_vocab, 3), 5: tokens(1, m.n_vocab, 4), 2: tokens(14, m.n_vocab, 5)}
    alone = {}
    for sid, t in seqs.items():
        m.reset()
        alone[sid] = m.eval(t, seq_id=sid)
    m.reset()
    together = m.eval_batch(seqs)
    assert set(together) == set(seqs)
    for sid in seqs:
        close(together[sid], alone[sid])
    # continuing the batch continues each sequence
    nxt = m.eval_batch({sid: [int(np.argmax(together[sid][-1]))] for sid in seqs})
    for sid, t in seqs.items():
        m.reset(sid)
        m.eval(t, seq_id=sid)
        one = m.eval([int(np.argmax(together[sid][-1]))], seq_id=sid)
        close(nxt[sid], one)


def test_small_ubatch_splits_batches(model_files):
    """n_ubatch smaller than the batch: several graph runs, same result."""
    path = model_files["mamba2"]
    big = tinyggml.Model(path, n_threads=2)
    small = tinyggml.Model(path, n_threads=2, n_ubatch=4)
    seqs = {0: tokens(9, big.n_vocab, 6), 1: tokens(3, big.n_vocab, 7), 2: tokens(6, big.n_vocab, 8)}
    a, b = big.eval_batch(seqs), small.eval_batch(seqs)
    for sid in seqs:
        close(a[sid], b[sid])


def test_reset_clears(case):
    _, m, _ = case
    t = tokens(6, m.n_vocab, 9)
    first = m.eval(t, seq_id=3)
    other = m.eval(t, seq_id=4)
    cont = m.eval(t, seq_id=3)
    assert np.abs(cont - first).max() > 1e-3          # state carried over: not a fresh start
    m.reset(3)
    np.testing.assert_array_equal(m.eval(t, seq_id=3), first)
    np.testing.assert_array_equal(m.eval(t, seq_id=4), cont)    # seq 4 kept its state
    m.reset()
    np.testing.assert_array_equal(m.eval(t, seq_id=4), other)


def test_threads_and_scalar_path_agree(model_files):
    path = model_files["falcon-f16"]
    t = tokens(17, 263, 10)
    base = tinyggml.Model(path, n_threads=1).eval(t)
    # every kernel splits work so that each output is computed the same way whatever the
    # thread count: results are bit-identical
    np.testing.assert_array_equal(tinyggml.Model(path, n_threads=2).eval(t), base)
    np.testing.assert_array_equal(tinyggml.Model(path, n_threads=3).eval(t), base)
    if simd_compiled():
        set_simd(False)
        try:
            scalar = tinyggml.Model(path, n_threads=2).eval(t)
        finally:
            set_simd(True)
        np.testing.assert_allclose(scalar, base, atol=2e-5, rtol=0)


def test_state_bytes_and_graph_reuse(case):
    name, m, _ = case
    hp = m.hparams
    mem = m.memory
    per_seq = sum(a[0].nbytes for a in list(mem.conv.values()) + list(mem.ssm.values()))
    assert m.state_bytes_per_sequence == per_seq == mem.bytes_per_sequence
    (dc1, ch), (ds, hd, nh) = hp.state_shapes()
    assert per_seq == hp.n_layer * 4 * (dc1 * ch + ds * hd * nh)
    m.eval([1, 2, 3])
    c = m.compiled(3)
    m.eval([4, 5, 6])
    assert m.compiled(3) is c                           # recorded once, reused
    for n in (1, 2, 3, 2, 1):                           # any number of sequences, one graph
        m.eval_batch({100 + i: [1 + i] for i in range(n)} | {200 + i: [2] for i in range(3 - n)})
    assert set(k[:2] for k in m._compiled) == {(3, 3)}
    assert m.state_bytes_per_sequence == per_seq        # constant whatever the context


def test_sequences_keep_their_states(model_files):
    """Sequences in their own slots, evaluated in any grouping, continue as they would alone;
    the slots are fixed at n_seq_max: one more sequence is refused until one is reset."""
    m = tinyggml.Model(model_files["mamba1"], n_threads=2, n_seq_max=6)
    t = tokens(5, m.n_vocab, 11)
    m.eval(t, seq_id=0)
    arrays = [a.ctypes.data for a in m.memory.conv.values()]
    for sid in range(1, 6):
        m.eval(tokens(3, m.n_vocab, sid), seq_id=sid)
    with pytest.raises(tinyggml.TinyGGMLError, match="0 of 6 slots free.*n_seq_max"):
        m.eval([1], seq_id=6)
    with pytest.raises(tinyggml.TinyGGMLError, match="all 6 sequence slots are in use"):
        m.memory.seq_slot(6)
    m.reset(3)
    with pytest.raises(tinyggml.TinyGGMLError, match="2 new sequences, 1 of 6"):
        m.eval_batch({6: [1], 7: [1]})
    assert not m.memory.has(6) and not m.memory.has(7)  # nothing taken by the refused batch
    m.eval([1], seq_id=6)                               # the freed slot
    assert [a.ctypes.data for a in m.memory.conv.values()] == arrays     # nothing moved
    got = m.eval([7], seq_id=0)
    fresh = tinyggml.Model(model_files["mamba1"], n_threads=2, n_seq_max=1)
    fresh.eval(t)
    np.testing.assert_array_equal(got, fresh.eval([7]))


def test_empty_tokens(case):
    _, m, _ = case
    assert m.eval([]).shape == (0, m.n_vocab)


def test_weights_are_zero_copy_views_of_the_mmap(model_files):
    """Weights point into the reader's memmap of the file: nothing copied at load."""
    m = tinyggml.Model(model_files["mamba2-g2-f16-untied"], n_threads=1)
    mm = m.file.reader.data
    assert isinstance(mm, np.memmap)
    lo = mm.ctypes.data
    hi = lo + mm.nbytes
    for t in m.weights.values():
        addr = t.data.ctypes.data
        assert lo <= addr and addr + t.data.nbytes <= hi, t.name


def test_last_logits_only(model_files):
    """logits="last": the LM head runs on the final token of each sequence only; ubatches in
    the middle of a long prompt run without it. Same numbers as computing every row."""
    path = model_files["mamba2-g2-f16-untied"]
    full = tinyggml.Model(path, n_threads=2)
    small = tinyggml.Model(path, n_threads=2, n_ubatch=4)
    seqs = {0: tokens(11, full.n_vocab, 12), 1: tokens(2, full.n_vocab, 13), 2: []}
    want = full.eval_batch(seqs)
    full.reset()
    for m in (full, small):
        got = m.eval_batch(seqs, logits="last")
        for sid, t in seqs.items():
            assert got[sid].shape == (min(len(t), 1), m.n_vocab)
            if len(t):
                close(got[sid][0], want[sid][-1])
        m.reset()
    assert any(k[1] == 0 for k in small._compiled)         # a graph without LM head was used
    with pytest.raises(tinyggml.TinyGGMLError, match="logits"):
        full.eval([1], logits="first")


@pytest.mark.parametrize("int_gemm", [False, True], ids=["float-gemm", "int-gemm"])
def test_q4_k_file_with_q6_k_head_matches_float64_reference(tmp_path, int_gemm):
    """A Q4_K file (d_model 256, so llama-quantize's rules give the tied LM head Q6_K), against
    the file's own float64 model, on each path, pinned by the graph option (not by the CPU):
    decoding token by token runs the Q6_K head on split int16 activations (QACT_K) and the
    blocks on int16 QACT dots; a short prompt at once the integer panels (on AVX-512 VNNI the
    repacked 16-row dots, QACT_K for the head); a long prompt the
    float panels (int_gemm=False) or the integer panels (int_gemm=True).

    Tolerances from the arithmetic: a float path multiplies float32 activations (errors of
    float32 sums, ~1e-6 of the logit scale here); an integer path first rounds each activation
    to int16 with one scale per 32 values (error up to 2^-16 of the block's largest value per
    element, ~1.5e-5), which the next layers carry: 2e-4 of the scale bounds it with room."""
    from tinyggml.backend import MUL_MAT_PATHS, simd_enabled
    from tinyggml.tools.quantize import quantize_file
    from tinyggml.tensor import Q6_K
    src, dst = tmp_path / "m.gguf", tmp_path / "m-q4_k.gguf"
    write_random_model(src, "mamba2", n_embd=256, n_layer=2, d_state=16, head_dim=64,
                       n_vocab=300, seed=7)
    quantize_file(src, dst, "q4_k", progress=False)
    m, ref = tinyggml.Model(dst, n_threads=2, int_gemm=int_gemm), RefModel(dst)
    assert m.weights["token_embd"].type == Q6_K and m.options.int_gemm == int_gemm
    n_long = max(m.options.int_gemm_min_cols, tinyggml.ops.PACKED_MAX_COLS) + 5   # past the 16-row dots
    t = tokens(n_long, m.n_vocab, 3)
    want, _, _ = ref.forward(t)
    scale = np.abs(want).max()
    float_tol, int_tol = 1e-5 * scale, 2e-4 * scale       # measured 5e-7 and 4.1e-5 of the scale
    np.testing.assert_allclose(m.eval(t), want, atol=int_tol if int_gemm else float_tol, rtol=0)
    if simd_enabled():                                    # the panels ran (the scalar build: tiles)
        c = m.compiled(n_long)
        paths = {c.plan.mul_mat_path(n) for n in c.graph.nodes if n.op == tinyggml.ops.Op.MUL_MAT}
        assert paths == {"qpanels" if int_gemm else "panels"}, paths
    m.reset(0)
    short = 17                                                                   # 6 <= 17 < 48
    np.testing.assert_allclose(m.eval(t[:short]), want[:short], atol=int_tol, rtol=0)
    m.reset(0)
    steps = np.concatenate([m.eval([int(x)]) for x in t])
    np.testing.assert_allclose(steps, want, atol=int_tol, rtol=0)       # 4.9e-5 measured
