"""Bad input gives a TinyGGMLError with a clear message: never a crash, never a traceback from
deep inside a library."""
import os

import gguf
import numpy as np
import pytest

import tinyggml
from tinyggml import ModelLoadError, TinyGGMLError
from tinyggml.testing import rewrite_gguf, write_random_model

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


def test_unsupported_type(good, tmp_path):
    r = gguf.GGUFReader(good)
    w = next(t for t in r.tensors if t.name == "blk.0.ssm_in.weight")
    q = gguf.quants.quantize(np.array(w.data), gguf.GGMLQuantizationType.Q8_0)
    p = tmp_path / "q.gguf"
    rewrite_gguf(good, p, replace={"blk.0.ssm_in.weight": (q, gguf.GGMLQuantizationType.Q8_0)})
    msg = load_error(p)
    assert "'blk.0.ssm_in.weight' has type Q8_0" in msg and "F32, F16" in msg


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
