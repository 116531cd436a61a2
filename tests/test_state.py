"""State you can keep: token history, save/load, copy, rollback, the prefix cache and its
persistence, and session files on the CLI (Mamba-1 and Mamba-2)."""
import hashlib
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import tinyggml
from conftest import close
from tinyggml import PrefixCache, TinyGGMLError
from tinyggml.state_file import MAGIC, encode, decode
from tinyggml.tools.testing import write_random_model

V = 97


def _model_file(tmp_path_factory, arch, seed=3):
    p = tmp_path_factory.mktemp(arch) / f"{arch}-{seed}.gguf"
    kw = dict(head_dim=8, n_group=2) if arch == "mamba2" else {}
    write_random_model(p, arch, n_embd=32, n_layer=2, d_state=8, n_vocab=V, seed=seed, **kw)
    return p


@pytest.fixture(scope="module", params=["mamba", "mamba2"])
def path(request, tmp_path_factory):
    return _model_file(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def m2path(tmp_path_factory):
    return _model_file(tmp_path_factory, "mamba2")


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """Same architecture and sizes as mamba2's `path`, other weights."""
    return _model_file(tmp_path_factory, "mamba2", seed=4)


def toks(n, seed):
    return np.random.default_rng(seed).integers(0, V, n).tolist()


def test_history_and_counts(path):
    m = tinyggml.Model(path, n_threads=1)
    assert m.n_past(0) == 0 and m.tokens(0) == [] and m.tokens_evaluated == 0
    t = toks(12, 1)
    m.eval(t[:5], 0)
    m.eval_batch({0: t[5:], 3: t[:2]})
    assert m.n_past(0) == 12 and m.tokens(0) == t and m.tokens(3) == t[:2]
    assert m.tokens_evaluated == 14
    m.reset(0)
    assert m.n_past(0) == 0 and m.n_past(3) == 2


def test_save_load_continues_bit_for_bit(path):
    a = tinyggml.Model(path, n_threads=2)
    a.eval(toks(20, 2), 5)
    blob = a.state_save(5)
    want = a.eval(toks(6, 3), 5)
    b = tinyggml.Model(path, n_threads=1)
    b.state_load(0, blob)
    assert b.tokens(0) == toks(20, 2)
    np.testing.assert_array_equal(b.last_logits(0), tinyggml.Model(path).eval(toks(20, 2), 0)[-1])
    np.testing.assert_array_equal(b.eval(toks(6, 3), 0), want)


def _rechecksum(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def test_every_damaged_blob_is_refused(m2path, other):
    path = m2path
    m = tinyggml.Model(path, n_threads=1)
    m.eval(toks(9, 5), 0)
    blob = m.state_save(0)
    target = tinyggml.Model(path, n_threads=1)
    target.eval(toks(4, 6), 1)
    before = (target.state_save(1), target.tokens(1))
    body = blob[:-32]
    foreign = tinyggml.Model(other, n_threads=1)
    foreign.eval(toks(9, 5), 0)
    bad = {
        "truncated": blob[:len(blob) // 2],
        "too short": blob[:20],
        "checksum": blob[:100] + bytes([blob[100] ^ 1]) + blob[101:],
        "not a tinyggml state": _rechecksum(b"XXXXXXXX" + body[8:]),
        "version": _rechecksum(body[:8] + struct.pack("<I", 99) + body[12:]),
        "another model": foreign.state_save(0),
        "state bytes": _rechecksum(body[:-1]),          # one state byte short
    }
    for what, b in bad.items():
        with pytest.raises(TinyGGMLError):
            target.state_load(1, b)
        assert (target.state_save(1), target.tokens(1)) == before, what
    with pytest.raises(TinyGGMLError, match="another model"):
        target.state_load(1, bad["another model"])
    with pytest.raises(TinyGGMLError, match="version 99"):
        target.state_load(1, bad["version"])
    with pytest.raises(TinyGGMLError, match="checksum"):
        target.state_load(1, bad["checksum"])


def test_seq_copy(path):
    m = tinyggml.Model(path, n_threads=2)
    m.eval(toks(13, 7), 0)
    m.seq_copy(0, 4)
    assert m.tokens(4) == m.tokens(0)
    np.testing.assert_array_equal(m.eval(toks(5, 8), 4), m.eval(toks(5, 8), 0))
    with pytest.raises(TinyGGMLError, match="no state"):
        m.seq_copy(9, 1)


@pytest.mark.parametrize("scan", ["chunked", "recurrent"])
@pytest.mark.parametrize("n_ubatch,every", [(512, 8), (5, 4), (3, 0)])
def test_rollback_to_every_offset(path, scan, n_ubatch, every):
    """After rollback(n) the sequence is as if only its first n tokens had been evaluated: the
    next logits match a fresh evaluation of those n tokens (within batch-invariance rounding),
    the greedy continuation is the same, and no more than snapshot_every - 1 tokens are
    evaluated again (with snapshots; without them, up to n)."""
    N = 19
    t = toks(N, 9)
    m = tinyggml.Model(path, n_threads=2, scan=scan, n_ubatch=n_ubatch, snapshot_every=every,
                       max_snapshots=64)
    ref = tinyggml.Model(path, n_threads=2, scan=scan, n_ubatch=n_ubatch)
    for n in range(N + 1):
        m.reset(0)
        m.eval(t[:7], 0)
        for x in t[7:]:                 # prompt at once, then token by token
            m.eval([x], 0)
        redo = m.rollback(0, n)
        assert m.n_past(0) == n and m.tokens(0) == t[:n]
        assert redo <= (every - 1 if every else n), (n, redo)
        ref.reset(0)
        want = ref.eval(t[:n] + [5], 0)[-1]
        got = m.eval([5], 0)[-1]
        close(got, want)
        g1, g2 = [int(np.argmax(got))], [int(np.argmax(want))]
        for _ in range(3):
            g1.append(int(np.argmax(m.eval([g1[-1]], 0)[-1])))
            g2.append(int(np.argmax(ref.eval([g2[-1]], 0)[-1])))
        assert g1 == g2
    with pytest.raises(TinyGGMLError, match="rollback"):
        m.rollback(0, 10 ** 6)


def test_prefix_cache_resumes_and_evicts(path):
    cache = PrefixCache(max_bytes=1 << 30)
    m = tinyggml.Model(path, n_threads=2, prefix_cache=cache)
    a = toks(20, 10)
    want = m.eval(a, 0, logits="last")
    assert cache.stats["entries"] == 1 and cache.misses == 1
    m.reset(0)
    n0 = m.tokens_evaluated
    np.testing.assert_array_equal(m.eval(a, 1, logits="last"), want)    # no evaluation at all
    assert m.tokens_evaluated == n0 and cache.hits == 1
    b = a + toks(6, 11)
    got = m.eval(b, 2, logits="last")
    assert m.tokens_evaluated == n0 + 6                                  # only the new tokens
    close(got, tinyggml.Model(path, n_threads=2).eval(b, 0, logits="last"))
    # a tiny budget: one entry fits, older ones are evicted
    per = cache._entries[next(iter(cache._entries))].nbytes
    small = PrefixCache(max_bytes=per + 200)
    m2 = tinyggml.Model(path, n_threads=2, prefix_cache=small)
    m2.eval(toks(20, 12), 0, logits="last")
    m2.eval(toks(20, 13), 1, logits="last")
    assert small.stats["entries"] == 1 and small.evictions == 1
    assert toks(20, 13) in small and toks(20, 12) not in small


def test_five_turn_chat_reevaluates_only_new_tokens(path):
    m = tinyggml.Model(path, n_threads=2, prefix_cache=PrefixCache())
    history, per_turn = [], []
    for turn in range(5):
        new = toks(7 + turn, 20 + turn)
        prompt = history + new
        g = m.generate(prompt, max_tokens=6, temperature=0, stream=True)
        list(g)
        gen = m.last_generation
        per_turn.append(gen.timings.prompt_tokens)
        history = prompt + gen.tokens
    assert per_turn == [7, 8, 9, 10, 11]
    # regenerate the last answer: nothing of the history is evaluated again
    list(m.generate(prompt, max_tokens=6, temperature=0, stream=True))
    assert m.last_generation.timings.prompt_tokens == 0
    assert m.last_generation.tokens == gen.tokens


def test_cache_persistence(path, tmp_path):
    m = tinyggml.Model(path, n_threads=2, prefix_cache=PrefixCache())
    want = m.eval(toks(15, 30), 0, logits="last")
    m.prefix_cache.save(tmp_path / "c")
    m2 = tinyggml.Model(path, n_threads=1)
    cache = PrefixCache.load(tmp_path / "c", m2)
    assert m2.prefix_cache is cache and len(cache) == 1
    n0 = m2.tokens_evaluated
    np.testing.assert_array_equal(m2.eval(toks(15, 30), 0, logits="last"), want)
    assert m2.tokens_evaluated == n0
    f = tmp_path / "c" / "prefix-cache.tgstate"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(TinyGGMLError, match="checksum"):
        PrefixCache.load(tmp_path / "c", m2)
    with pytest.raises(TinyGGMLError, match="cannot read"):
        PrefixCache.load(tmp_path / "missing", m2)


def test_format_round_trip_and_bounds():
    fp = bytes(range(32))
    from tinyggml.state_file import Entry
    e = Entry(np.array([1, 2, 3], np.int32), b"\x01" * 16, np.arange(5, dtype=np.float32))
    blob = encode(fp, [e, Entry(np.array([4], np.int32), b"\x02" * 16, None)])
    assert blob.startswith(MAGIC)
    got = decode(blob, fp, 16, 5)
    assert [g.tokens.tolist() for g in got] == [[1, 2, 3], [4]] and got[1].logits is None
    with pytest.raises(TinyGGMLError, match="16 state bytes"):
        decode(blob, fp, 17, 5)
    with pytest.raises(TinyGGMLError, match="outside the vocabulary"):
        decode(encode(fp, [Entry(np.array([9], np.int32), b"", None)]), fp, 0, 5)
    with pytest.raises(TinyGGMLError, match="logits"):
        decode(blob, fp, 16, 6)


def test_cli_session_file(tmp_path):
    """On the demo model: the second run evaluates no prompt token and prints the same text, a
    longer prompt only its new tokens, and a damaged file is one warning and a run from scratch."""
    sess = tmp_path / "s.bin"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(*extra, prompt="ROMEO: hello there"):
        r = subprocess.run([sys.executable, "-m", "tinyggml", "run", "-p", prompt, "-n", "4",
                            "--temp", "0", "--prompt-cache", str(sess), *extra],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        line = next(x for x in r.stderr.splitlines() if "prompt eval time" in x)
        return int(line.split("/")[1].split()[0]), r

    first, r1 = run()
    assert first > 0 and sess.exists()
    again, r2 = run()
    assert again == 0 and r2.stdout == r1.stdout
    more, _ = run(prompt="ROMEO: hello there, friend")
    assert 0 < more < first                                   # only what follows the saved prompt
    sess.write_bytes(sess.read_bytes()[:-5])                  # damaged: one warning, from scratch
    n, r = run("--prompt-cache-ro")
    assert n == first and "warning" in r.stderr and r.stderr.count("warning") == 1


def test_history_and_state_agree_after_an_interrupt(path, monkeypatch):
    """An interrupt arrives when a run returns: the tokens of that run are in the history, so
    the sequence continues as one that saw them."""
    m = tinyggml.Model(path, n_threads=2)
    m.eval([1, 2, 3], 0)
    run = m._run

    def run_then_interrupt(c, info):
        run(c, info)
        raise KeyboardInterrupt
    monkeypatch.setattr(m, "_run", run_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        m.eval([4], 0)
    monkeypatch.setattr(m, "_run", run)
    assert m.tokens(0) == [1, 2, 3, 4]
    ref = tinyggml.Model(path, n_threads=2)
    close(m.eval([5], 0)[-1], ref.eval([1, 2, 3, 4, 5], 0)[-1])


def test_a_failed_call_frees_the_slots_it_took(path, monkeypatch):
    m = tinyggml.Model(path, n_threads=1, n_seq_max=2)
    m.eval([1], 0)

    def fail(*a, **k):
        raise MemoryError
    monkeypatch.setattr(m, "compiled", fail)
    for _ in range(3):
        with pytest.raises(MemoryError):
            m.eval_batch({7: [1, 2], 0: [3]})
    monkeypatch.undo()
    assert not m.memory.has(7) and m.tokens(0) == [1]
    m.eval([1], 8)                                        # the slot is free


def test_state_load_refuses_non_bytes(path):
    m = tinyggml.Model(path, n_threads=1)
    for bad in (2 ** 40, "text", None):
        with pytest.raises(TinyGGMLError, match="expected bytes"):
            m.state_load(0, bad)


def test_options_passed_whole_are_kept(path):
    from tinyggml.options import GraphOptions
    m = tinyggml.Model(path, options=GraphOptions(scan="recurrent", int_gemm=True))
    assert m.options.scan == "recurrent" and m.options.int_gemm is True
    with pytest.raises(ValueError, match="multiple of 256"):
        GraphOptions(mm_kc=100)
