"""Hybrid models (Mamba-2 layers, LFM2's short convolutions or Qwen3.5's gated delta rule
beside attention layers with a KV cache) on random files the tests write (tools/testing.py write_random_hybrid), against the
independent float64 numpy reference tests/reference/hybrid_np.py; and the runtime around them: batched, chunked and
token-by-token evaluation, the context limit, the state API over both halves of the memory."""
import numpy as np
import pytest

import tinyggml
from reference.hybrid_np import RefHybrid
from tinyggml.errors import TinyGGMLError
from tinyggml.tools.testing import write_random_hybrid

CASES = {
    # Granite-4.0-H: no position embedding, every multiplier on, two groups in the gated norm
    "granite-nope": dict(arch="granitehybrid", pattern="MM*M*M", n_embd=64, n_group=2, rope=False,
                         scales=dict(embedding_scale=1.7, residual_scale=0.6, attention_scale=0.09,
                                     logit_scale=2.5)),
    # Bamba-style: rope (llama pairs), one kv head for three query heads, head size not 64 / n_head
    "granite-rope": dict(arch="granitehybrid", pattern="M*M", n_embd=64, n_head=6, n_kv=2, head_dim=20,
                         rope=True, rope_base=5000.0, tied=False),
    "nemotron": dict(arch="nemotron_h", pattern="M-*M-*", n_embd=64, n_group=4, n_head=4, n_kv=1),
    "falcon": dict(arch="falcon-h1", pattern="MMM", n_embd=64, d_inner=96, ssm_head_dim=16, n_head=4,
                   n_kv=2, head_dim=24, rope_base=20000.0),
    "falcon-nonorm": dict(arch="falcon-h1", pattern="MM", n_embd=32, n_head=2, n_kv=1, ssm_norm=False),
    # LFM2: gated short convolutions beside attention with q / k norms (rope NEOX)
    "lfm2": dict(arch="lfm2", pattern="C*CC*", n_embd=64, n_head=4, n_kv=2, rope_base=1e6),
    "lfm2-l4": dict(arch="lfm2", pattern="CC*C", n_embd=48, n_head=4, n_kv=1, l_cache=4, tied=False),
    # Qwen3.5: gated delta rule (4 value heads over 2 key heads) beside gated attention with
    # partial rope; and one key head per value head, head sizes off the SIMD blocks
    "qwen35": dict(arch="qwen35", pattern="DD*D*", n_embd=64, d_state=16, n_group=2, d_inner=64,
                   ssm_head_dim=16, n_head=4, n_kv=2, head_dim=32, n_rot=8, tied=False),
    "qwen35-odd": dict(arch="qwen35", pattern="D*D", n_embd=40, d_state=12, n_group=3, d_inner=60,
                       ssm_head_dim=20, n_head=2, n_kv=1, head_dim=24, n_rot=12, d_conv=3),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hybrid")
    out = {}
    for i, (name, cfg) in enumerate(CASES.items()):
        out[name] = str(d / f"{name}.gguf")
        write_random_hybrid(out[name], n_vocab=300, seed=40 + i, **cfg)
    return out


def tol(want):
    return 3e-5 * max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kv_type", ["f32", "f16"])
def test_matches_numpy_reference(files, case, kv_type):
    rng = np.random.default_rng(1)
    toks = rng.integers(1, 300, 70)
    want = RefHybrid(files[case]).forward(toks)
    m = tinyggml.Model(files[case], n_threads=2, kv_type=kv_type)
    got = m.eval(toks)
    # F16 cells round each key and value to 11 bits: the attention output moves by ~2^-11 of
    # its size, and so do the logits after it
    np.testing.assert_allclose(got, want, rtol=0, atol=tol(want) * (1 if kv_type == "f32" else 40))


@pytest.mark.parametrize("case", ["granite-nope", "nemotron", "falcon", "lfm2", "qwen35"])
def test_chunked_batched_token_by_token_agree(files, case):
    """Prompt at once, in pieces, token by token, and beside other sequences in one ubatch:
    the same logits (the SSM scan's chunked form rounds differently: to within tol)."""
    rng = np.random.default_rng(2)
    a, b = rng.integers(1, 300, 41), rng.integers(1, 300, 17)
    m = tinyggml.Model(files[case], n_threads=2, kv_type="f32", n_ubatch=16)
    whole = m.eval(a, seq_id=0)
    m.reset()
    steps = np.concatenate([m.eval([t], seq_id=0) for t in a])
    np.testing.assert_allclose(steps, whole, rtol=0, atol=tol(whole))
    m.reset()
    out = m.eval_batch({3: a, 5: b})
    np.testing.assert_allclose(out[3], whole, rtol=0, atol=tol(whole))
    alone = tinyggml.Model(files[case], n_threads=1, kv_type="f32").eval(b)
    np.testing.assert_allclose(out[5], alone, rtol=0, atol=tol(alone))
    # ragged decode: both continue one token a step in one graph run
    nxt = m.eval_batch({3: [7], 5: [9]})
    ref = RefHybrid(files[case])
    st = ref.new_state()
    ref.forward(a, st)
    np.testing.assert_allclose(nxt[3][0], ref.forward([7], st)[0], rtol=0, atol=tol(whole))


def test_qwen35_prediction_blocks_are_skipped(files, tmp_path):
    """A Qwen3.5 file with a multi-token-prediction block after its decoder blocks (block_count
    one more, nextn_predict_layers 1, per-layer keys as arrays of block_count values, as
    llama.cpp reads them): the same logits; per-layer arrays of another length are refused."""
    import gguf
    from tinyggml.errors import ModelLoadError
    from tinyggml.tools.testing import rewrite_gguf
    src, mtp, bad = files["qwen35"], tmp_path / "mtp.gguf", tmp_path / "bad.gguf"
    U32 = gguf.GGUFValueType.UINT32
    kv = {"qwen35.block_count": (6, U32), "qwen35.nextn_predict_layers": (1, U32),
          "qwen35.attention.head_count_kv": ([0, 0, 2, 0, 2, 2], gguf.GGUFValueType.ARRAY),
          "qwen35.attention.recurrent_layers": ([True, True, False, True, False, False],
                                                gguf.GGUFValueType.ARRAY)}
    rewrite_gguf(src, mtp, set_kv=kv)
    toks = [5, 17, 200, 3, 9, 44]
    want = tinyggml.Model(src, n_threads=1, kv_type="f32").eval(toks)
    np.testing.assert_array_equal(tinyggml.Model(str(mtp), n_threads=1, kv_type="f32").eval(toks), want)
    rewrite_gguf(src, bad, set_kv={**kv, "qwen35.attention.head_count_kv": ([0, 0, 2], gguf.GGUFValueType.ARRAY)})
    with pytest.raises(ModelLoadError, match="head_count_kv"):
        tinyggml.Model(str(bad))


def test_half_a_pair_of_qk_norms_is_refused(files, tmp_path):
    from tinyggml.errors import ModelLoadError
    from tinyggml.tools.testing import rewrite_gguf
    bad = tmp_path / "bad.gguf"
    rewrite_gguf(files["lfm2"], bad, drop=("blk.1.attn_k_norm.weight",))
    with pytest.raises(ModelLoadError, match="layer 1 has one of attn_q_norm / attn_k_norm"):
        tinyggml.Model(str(bad))


def test_context_limit(files):
    m = tinyggml.Model(files["granite-nope"], n_ctx=20)
    assert m.n_ctx == 20
    m.eval(list(range(1, 16)))
    with pytest.raises(TinyGGMLError, match="context limit of 20"):
        m.eval(list(range(1, 7)))
    assert m.n_past(0) == 15                       # refused before anything ran
    m.eval(list(range(1, 6)))                      # exactly to the limit
    with pytest.raises(TinyGGMLError, match="context limit"):
        m.eval([1])


@pytest.mark.parametrize("case", ["nemotron", "lfm2-l4", "qwen35"])
def test_state_save_load_copy_rollback(files, case):
    """Both halves of the memory: save/load, seq_copy and rollback continue exactly as the
    original sequence would (rollback restores the recurrent layers from a snapshot and
    truncates the attention layers' cache)."""
    rng = np.random.default_rng(3)
    a, b = rng.integers(1, 300, 30), rng.integers(1, 300, 12)
    path = files[case]
    m = tinyggml.Model(path, n_threads=1, kv_type="f32", snapshot_every=8)
    m.eval(a, seq_id=0)
    blob = m.state_save(0)
    assert len(m.state_save(0)) > m.memory.bytes_per_sequence + 30 * m.memory.bytes_per_token
    want = m.eval(b, seq_id=0)
    # load into another model (pieces cut at the same points: the same arithmetic) and sequence
    m2 = tinyggml.Model(path, n_threads=1, kv_type="f32", snapshot_every=8)
    m2.state_load(4, blob)
    np.testing.assert_array_equal(m2.eval(b, seq_id=4), want)
    # copy, then both continue alike
    m2.seq_copy(4, 6)
    c = rng.integers(1, 300, 5)
    np.testing.assert_array_equal(m2.eval(c, seq_id=6), m2.eval(c, seq_id=4))
    # rollback to 27 (a snapshot at 24, three tokens evaluated again) then diverge
    n = m.rollback(0, 27)
    assert n == 3 and m.n_past(0) == 27
    d = rng.integers(1, 300, 6)
    fresh = tinyggml.Model(path, n_threads=1, kv_type="f32")
    want = fresh.eval(np.concatenate([a[:27], d]))[27:]
    np.testing.assert_allclose(m.eval(d, seq_id=0), want, rtol=0, atol=tol(want))
    # a blob of another length is refused, the sequence left as it was
    with pytest.raises(TinyGGMLError):
        m2.state_load(4, blob[:-40])
    np.testing.assert_array_equal(m2.tokens(4), list(a) + list(b) + list(c))


def test_prefix_cache_resumes_hybrid(files):
    from tinyggml.prefix_cache import PrefixCache
    path = files["granite-rope"]
    rng = np.random.default_rng(4)
    prompt = rng.integers(1, 300, 25)
    m = tinyggml.Model(path, n_threads=1, kv_type="f32", prefix_cache=PrefixCache(1 << 24))
    first = m.eval(prompt, seq_id=0, logits="last")
    m.reset(0)
    more = np.concatenate([prompt, rng.integers(1, 300, 4)])
    before = m.tokens_evaluated
    got = m.eval(more, seq_id=1, logits="last")
    assert m.tokens_evaluated - before == 4            # the cached 25 tokens were not run again
    fresh = tinyggml.Model(path, n_threads=1, kv_type="f32")
    want = fresh.eval(more, logits="last")
    np.testing.assert_allclose(got, want, rtol=0, atol=tol(want))
    assert first.shape == (1, 300)


def test_memory_estimate_counts_the_kv_cache(files):
    m = tinyggml.Model(files["granite-nope"], n_ctx=1000, kv_type="f16")
    est = m.memory_estimate()
    # 2 attention layers x (K + V) x 2 kv heads x 16 dims x 2 bytes per position
    assert m.memory.bytes_per_token == 2 * 2 * 2 * 16 * 2
    assert est.state_per_sequence == m.memory.bytes_per_sequence + 1000 * m.memory.bytes_per_token


def test_cli_kv_cache_flags(files):
    """-c sizes the KV cache (info reports it, run stops at it), --kv-type picks its cells;
    both are one-line usage errors when wrong."""
    from test_cli import cli
    path = files["falcon"]
    r = cli("info", "-m", path, "-c", 64, "--kv-type", "f32")
    assert r.returncode == 0, r.stderr
    per_token = 2 * 3 * 2 * 24 * 4                 # K and V, 3 layers, 2 KV heads of 24, F32
    assert f"KV cache: {per_token} bytes per token (f32)" in r.stdout
    assert "at n_ctx 64" in r.stdout
    r = cli("run", "-m", path, "-p", "a b c d e f", "-n", 50, "--temp", 0, "-c", 20)
    assert r.returncode == 0, r.stderr             # stops at -c: prompt + generated = 20
    r = cli("run", "-m", path, "-p", "x", "--kv-type", "q4_0")
    assert r.returncode == 2 and "--kv-type" in r.stderr
