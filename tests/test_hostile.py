"""Hostile and concurrent use (first part of the hostile-input issue): tensor offsets that are
misaligned or overlap are refused at load; a Model shared by threads gives every caller the
logits it would get alone."""
import struct
import threading

import numpy as np
import pytest

import tinyggml
from tinyggml.tools.testing import write_random_model


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    p = tmp_path_factory.mktemp("hostile") / "m.gguf"
    write_random_model(p, "mamba2", n_embd=32, n_layer=2, d_state=8, head_dim=8, n_vocab=97, seed=2)
    return p


def _offset_field(raw: bytes, name: str) -> int:
    """Byte position of tensor `name`'s data offset (u64) in the tensor-info table."""
    key = struct.pack("<Q", len(name)) + name.encode()
    at = raw.index(key) + len(key)
    n_dims = struct.unpack_from("<I", raw, at)[0]
    return at + 4 + 8 * n_dims + 4


def test_misaligned_offset_refused(path, tmp_path):
    raw = bytearray(path.read_bytes())
    at = _offset_field(raw, "blk.0.ssm_a")
    rel = struct.unpack_from("<Q", raw, at)[0]
    struct.pack_into("<Q", raw, at, rel + 255)
    bad = tmp_path / "misaligned.gguf"
    bad.write_bytes(bytes(raw))
    with pytest.raises(tinyggml.ModelLoadError, match=r"misaligned.gguf.*blk.0.ssm_a.*alignment"):
        tinyggml.Model(bad)


def test_overlapping_tensors_refused(path, tmp_path):
    raw = bytearray(path.read_bytes())
    a, b = _offset_field(raw, "blk.0.ssm_in.weight"), _offset_field(raw, "blk.0.ssm_out.weight")
    struct.pack_into("<Q", raw, b, struct.unpack_from("<Q", raw, a)[0] + 32)   # inside ssm_in
    bad = tmp_path / "overlap.gguf"
    bad.write_bytes(bytes(raw))
    with pytest.raises(tinyggml.ModelLoadError, match=r"overlap.gguf.*overlap"):
        tinyggml.Model(bad)


def test_threads_sharing_a_model(path):
    """4 threads, each evaluating its own sequence on one Model, 5 rounds: every call returns
    what the same calls give on a Model of its own."""
    rng = np.random.default_rng(0)
    work = {sid: [rng.integers(0, 97, int(rng.integers(1, 12))).tolist() for _ in range(5)]
            for sid in range(4)}
    want = {}
    for sid, calls in work.items():
        alone = tinyggml.Model(path, n_threads=2)
        want[sid] = [alone.eval(c, sid) for c in calls]
    shared = tinyggml.Model(path, n_threads=2)
    got, errors = {sid: [] for sid in work}, []
    start = threading.Barrier(4)

    def worker(sid):
        try:
            start.wait()
            for c in work[sid]:
                got[sid].append(shared.eval(c, sid))
        except Exception as e:                   # reported below, not lost in the thread
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(sid,)) for sid in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for sid in work:
        for g, w in zip(got[sid], want[sid]):
            np.testing.assert_array_equal(g, w)
    assert all(shared.tokens(sid) == sum(work[sid], []) for sid in work)


def test_memory_estimate_and_refusal(path, monkeypatch):
    from tinyggml import runtime
    m = tinyggml.Model(path, n_threads=1)
    est = m.memory_estimate()
    import os
    assert est.weights == sum(t.n_bytes for t in m.file.tensors.values()) <= os.path.getsize(path)
    assert est.state_per_sequence == m.state_bytes_per_sequence and est.arena > 0
    monkeypatch.setattr(runtime, "available_memory", lambda: est.weights // 2)
    with pytest.raises(tinyggml.ModelLoadError, match=r"m.gguf: needs about .* available.*check_memory"):
        tinyggml.Model(path)
    tinyggml.Model(path, check_memory=False).eval([1, 2])      # the override loads it


def test_check_finite_names_the_first_bad_node(path, tmp_path):
    """A NaN planted in one weight: with check_finite the error names the node that first
    produced non-finite values (the layer's ssm_out, not the logits downstream)."""
    from tinyggml.gguf_reader import GGUFReader
    r = GGUFReader(path)
    t = next(t for t in r.tensors if t.name == "blk.1.ssm_out.weight")
    raw = bytearray(path.read_bytes())
    raw[t.data_offset:t.data_offset + 4] = np.float32(np.nan).tobytes()
    bad = tmp_path / "nan.gguf"
    bad.write_bytes(bytes(raw))
    assert not np.isfinite(tinyggml.Model(bad, n_threads=1).eval([1, 2, 3])).all()
    m = tinyggml.Model(bad, n_threads=1, check_finite=True)
    with pytest.raises(tinyggml.TinyGGMLError, match=r"nan first appears in node 'blk.1.ssm_out' \(mul_mat"):
        m.eval([1, 2, 3])
    ok = tinyggml.Model(path, n_threads=1, check_finite=True)
    np.testing.assert_array_equal(ok.eval([1, 2, 3]), tinyggml.Model(path, n_threads=1).eval([1, 2, 3]))


def test_plan_cache_is_bounded(path, monkeypatch):
    from tinyggml import runtime
    m = tinyggml.Model(path, n_threads=1)
    for n in range(1, 80):
        m.eval(list(range(n % 9 + 1)) * (n // 9 + 1), seq_id=0)
        m.reset(0)
    assert len(m._compiled) <= runtime.PLANS_MAX
    monkeypatch.setattr(runtime, "PLAN_BYTES_MAX", 1)       # only the newest plan fits
    m.eval([1] * 83, 0)                                      # a shape not cached yet
    assert len(m._compiled) == 1 and (83, 83, ()) in m._compiled


def test_names_from_a_file_are_shown_escaped(tmp_path):
    """A tensor name with a newline, a terminal escape and a byte that is not UTF-8 is one
    line in the message, each shown escaped."""
    import struct
    from tinyggml.errors import shown
    assert shown(b"ok\n\x1b[31m\xff") == "ok\\n\\x1b[31m\\xff"
    assert shown("x" * 100).endswith("...") and len(shown("x" * 100)) == 83
    # a GGUF v3 with no keys and one tensor of 7 dimensions, named with hostile bytes
    name = b"blk\n\x1b[2J\xfe"
    blob = (b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + struct.pack("<Q", len(name)) + name
            + struct.pack("<I", 7) + struct.pack("<7Q", *[1] * 7) + struct.pack("<IQ", 0, 0))
    p = tmp_path / "names.gguf"
    p.write_bytes(blob + bytes(64))
    from tinyggml.errors import ModelLoadError
    from tinyggml.gguf_file import GGUFModel
    with pytest.raises(ModelLoadError) as e:
        GGUFModel(str(p))
    msg = str(e.value)
    assert "\n" not in msg and "\x1b" not in msg and "blk\\n\\x1b[2J\\xfe" in msg, msg
