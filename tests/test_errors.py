"""Bad input gives a TinyGGMLError with a clear message: never a crash, never a traceback from
deep inside a library."""
import os

import gguf
import numpy as np
import pytest

import tinyggml
from tinyggml import ModelLoadError, TinyGGMLError
from tinyggml.tools.testing import rewrite_gguf, write_random_model

CFG = dict(arch="mamba2", n_embd=32, n_layer=1, d_state=8, head_dim=16, n_vocab=64)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    p = tmp_path_factory.mktemp("err") / "good.gguf"
    write_random_model(p, **CFG)
    return p


def load_error(path) -> str:
    with pytest.raises(ModelLoadError) as e:
        tinyggml.Model(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_good_file_loads(good):
    assert tinyggml.Model(good).arch == "mamba2"


def test_missing_file_and_directory(tmp_path):
    assert "no such file" in load_error(tmp_path / "nope.gguf")
    assert "directory" in load_error(tmp_path)


def test_wrong_magic(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert "not a GGUF file" in load_error(p)
    p.write_bytes(b"")
    assert "not a GGUF file" in load_error(p)


@pytest.mark.parametrize("frac", [0.0001, 0.01, 0.5, 0.999])
def test_truncated(good, tmp_path, frac):
    data = good.read_bytes()
    p = tmp_path / "t.gguf"
    p.write_bytes(data[:max(4, int(len(data) * frac))])
    msg = load_error(p)
    assert "truncated" in msg or "damaged" in msg


def test_unknown_arch(good, tmp_path):
    p = tmp_path / "llama.gguf"
    rewrite_gguf(good, p, arch="llama")
    assert "unsupported architecture 'llama'" in load_error(p)


def test_missing_tensor(good, tmp_path):
    p = tmp_path / "m.gguf"
    rewrite_gguf(good, p, drop=["blk.0.ssm_out.weight"])
    msg = load_error(p)
    assert "missing tensor 'blk.0.ssm_out.weight'" in msg


def test_missing_key(good, tmp_path):
    r = gguf.GGUFReader(good)
    p = tmp_path / "k.gguf"
    w = gguf.GGUFWriter(str(p), "mamba2")
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "mamba2.ssm.state_size"):
            continue
        vt = gguf.GGUFValueType(f.types[0])
        w.add_key_value(key, f.contents(), vt, gguf.GGUFValueType(f.types[-1]) if vt == gguf.GGUFValueType.ARRAY else None)
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    assert "missing metadata key 'mamba2.ssm.state_size'" in load_error(p)


def test_wrong_shape(good, tmp_path):
    p = tmp_path / "s.gguf"
    rewrite_gguf(good, p, replace={"blk.0.ssm_conv1d.bias": np.zeros(7, np.float32)})
    msg = load_error(p)
    assert "'blk.0.ssm_conv1d.bias' has shape [7], expected [80]" in msg


def test_unsupported_type(tmp_path):
    """A type nothing can read (Q8_K is an activation format, never a weight type)."""
    base = tmp_path / "b.gguf"
    write_random_model(base, arch="mamba2", n_embd=256, n_layer=1, d_state=8, head_dim=64,
                       n_vocab=64)
    rows = int(next(t for t in gguf.GGUFReader(base).tensors if t.name == "blk.0.ssm_in.weight").shape[1])
    raw = np.random.default_rng(0).integers(0, 256, size=(rows, 292), dtype=np.uint8)
    p = tmp_path / "q.gguf"
    rewrite_gguf(base, p, replace={"blk.0.ssm_in.weight": (raw, gguf.GGMLQuantizationType.Q8_K)})
    msg = load_error(p)
    assert "'blk.0.ssm_in.weight' has type Q8_K, which neither tinyggml nor the gguf package can read" in msg


def test_type_only_gguf_can_read_is_dequantized_at_load(tmp_path, capfd):
    """IQ4_NL has no native kernel: dequantized to F16 at load, with one warning line, and the
    model computes what the same model with those F16 weights computes."""
    base = tmp_path / "b.gguf"
    write_random_model(base, arch="mamba2", n_embd=64, n_layer=1, d_state=8, head_dim=16,
                       n_vocab=64, seed=3)
    r = gguf.GGUFReader(base)
    w = next(t for t in r.tensors if t.name == "blk.0.ssm_in.weight")
    rows, K = int(w.shape[1]), int(w.shape[0])
    raw = np.random.default_rng(1).integers(0, 256, size=(rows, K // 32, 18), dtype=np.uint8)
    raw[:, :, 0:2] = np.full((rows, K // 32), 0.05, np.float16).view(np.uint8).reshape(rows, -1, 2)
    raw = raw.reshape(rows, -1)
    iq = tmp_path / "iq.gguf"
    rewrite_gguf(base, iq, replace={"blk.0.ssm_in.weight": (raw, gguf.GGMLQuantizationType.IQ4_NL)})
    f16 = tmp_path / "f16.gguf"
    deq = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.IQ4_NL).astype(np.float16)
    rewrite_gguf(base, f16, replace={"blk.0.ssm_in.weight": deq})
    capfd.readouterr()
    m = tinyggml.Model(iq, n_threads=1)
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "IQ4_NL->f16" in err and "MiB of extra memory" in err
    np.testing.assert_array_equal(m.eval([1, 2, 3]), tinyggml.Model(f16, n_threads=1).eval([1, 2, 3]))


def test_bad_tokens_and_args(good):
    m = tinyggml.Model(good, n_threads=1)
    with pytest.raises(TinyGGMLError, match="out of range"):
        m.eval([1, 64])
    with pytest.raises(TinyGGMLError, match="out of range"):
        m.eval([-1])
    with pytest.raises(TinyGGMLError, match="integer token ids"):
        m.eval([1.5, 2.0])
    with pytest.raises(TinyGGMLError, match="integer token ids"):
        m.eval([[1, 2]])
    with pytest.raises(TinyGGMLError, match="seq_id"):
        m.eval([1], seq_id="a")
    with pytest.raises(TinyGGMLError, match="dict"):
        m.eval_batch([[1, 2]])
    with pytest.raises(TinyGGMLError, match="n_threads"):
        tinyggml.Model(good, n_threads=0)
    m.eval([1, 2, 3])                                   # still usable after errors
