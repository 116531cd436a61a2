"""make-model: llama.cpp's layout at real sizes, streamed; quantized types load and run."""
import gguf
import numpy as np
import pytest

import tinyggml
from conftest import FIXTURES, HAVE_FIXTURES
from tinyggml.errors import TinyGGMLError
from tinyggml.tools.make_model import make_model


@pytest.mark.parametrize("preset,fixture", [("mamba-tiny", "mamba1-tiny-f32"),
                                            ("mamba2-tiny", "mamba2-tiny-f32")])
def test_layout_matches_converter(tmp_path, preset, fixture):
    out = tmp_path / "m.gguf"
    make_model(preset, out, "f32", progress=False)
    r = gguf.GGUFReader(out)
    got = [(t.name, [int(n) for n in t.shape], t.tensor_type.name) for t in r.tensors]
    if not HAVE_FIXTURES:
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    f = gguf.GGUFReader(FIXTURES / "models" / f"{fixture}.gguf")
    want = [(t.name, [int(n) for n in t.shape], t.tensor_type.name) for t in f.tensors]
    assert got == want
    keys = {k for k in f.fields if not k.startswith("tokenizer.")}
    assert keys <= set(r.fields), keys - set(r.fields)


@pytest.fixture(scope="module")
def f32_logits(tmp_path_factory):
    f32 = tmp_path_factory.mktemp("mm") / "m-f32.gguf"
    make_model("mamba2-tiny", f32, "f32", progress=False)
    return tinyggml.Model(f32, n_threads=1).eval([1, 2, 3])


@pytest.mark.parametrize("wtype", ["f16", "q8_0", "q4_0", "q4_k", "q6_k"])
def test_quantized_presets_run(tmp_path, wtype, f32_logits):
    out = tmp_path / f"m-{wtype}.gguf"
    make_model("mamba2-tiny", out, wtype, progress=False)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out).tensors}
    assert types["blk.0.ssm_a"] == "F32" and types["blk.0.ssm_conv1d.weight"] == "F32"
    # rows of 64 values cannot hold 256-blocks: llama-quantize's fallbacks
    assert types["blk.0.ssm_in.weight"] == {"q4_k": "Q5_0", "q6_k": "Q8_0"}.get(wtype, wtype.upper())
    m = tinyggml.Model(out, n_threads=1)
    lg = m.eval([1, 2, 3])
    assert np.isfinite(lg).all()
    ref = f32_logits
    rel = np.sqrt(np.mean((lg - ref) ** 2) / np.mean(ref ** 2))
    assert rel < {"f16": 1e-3, "q8_0": 0.02, "q6_k": 0.05}.get(wtype, 0.3), rel


def test_bad_preset_and_no_partial_file(tmp_path):
    with pytest.raises(TinyGGMLError, match="unknown preset"):
        make_model("mamba-9000b", tmp_path / "x.gguf")
    with pytest.raises(TinyGGMLError, match="unknown type"):
        make_model("mamba-tiny", tmp_path / "x.gguf", "q9_9")
    assert list(tmp_path.iterdir()) == []
