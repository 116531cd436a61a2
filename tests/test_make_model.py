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


HYBRID_PRESETS = {"granite-4.0-h-350m": (0.30e9, 0.40e9), "granite-4.0-h-1b": (1.3e9, 1.7e9),
                  "falcon-h1-0.5b": (0.45e9, 0.60e9), "lfm2-350m": (0.33e9, 0.38e9),
                  "lfm2-1.2b": (1.1e9, 1.25e9), "qwen3.5-0.8b": (0.7e9, 0.9e9)}


@pytest.mark.parametrize("preset", sorted(HYBRID_PRESETS))
def test_hybrid_preset_sizes(preset):
    """The presets have the released models' parameter counts (Granite-4.0-H-350M: 340M,
    -1B: 1.5B, Falcon-H1-0.5B: 0.52B, LFM2-350M: 354M, LFM2-1.2B: 1.17B; Qwen3.5-0.8B's text
    model: 0.75B), counted from the shapes make-model writes."""
    from tinyggml.tools.make_model import PRESETS, _hybrid_shapes
    from tinyggml.tools.testing import hybrid_config
    n = sum(int(np.prod(s)) for _, s in _hybrid_shapes(hybrid_config(**PRESETS[preset])))
    lo, hi = HYBRID_PRESETS[preset]
    assert lo <= n <= hi, n


@pytest.mark.parametrize("preset", sorted(HYBRID_PRESETS))
@pytest.mark.parametrize("wtype", ["f32", "q8_0"])
def test_hybrid_preset_small_twin(tmp_path, monkeypatch, preset, wtype):
    """A preset's layout at small sizes (its arch, layer kinds and options): the same tensors
    and keys as tools/testing.write_random_hybrid (which test_hybrid.py checks against the
    numpy reference), and it runs, F32 exactly as that reference."""
    from reference.hybrid_np import RefHybrid
    from tinyggml.tools import make_model as mm
    from tinyggml.tools.testing import write_random_hybrid
    big = mm.PRESETS[preset]
    kinds = "".join(dict.fromkeys(big["pattern"]))
    small = dict(big, pattern=kinds + kinds[::-1], n_embd=64, d_inner=128, ssm_head_dim=16,
                 d_state=16, n_head=4, n_kv=2, head_dim=16, n_ff=96, n_vocab=300, n_group=2,
                 n_rot=None)
    monkeypatch.setitem(mm.PRESETS, "twin", small)
    out, ref = tmp_path / "twin.gguf", tmp_path / "ref.gguf"
    make_model("twin", out, wtype, progress=False)
    write_random_hybrid(ref, **small)
    r, f = gguf.GGUFReader(out), gguf.GGUFReader(ref)
    assert [(t.name, [int(n) for n in t.shape]) for t in r.tensors] == \
           [(t.name, [int(n) for n in t.shape]) for t in f.tensors]
    assert {k for k in f.fields if not k.startswith("tokenizer.")} <= set(r.fields)
    toks = [1, 5, 7, 200, 3, 9]
    got = tinyggml.Model(out, n_threads=1, kv_type="f32").eval(toks)
    want = RefHybrid(str(out)).forward(toks)
    tol = 3e-5 if wtype == "f32" else 0.05           # Q8_0: ~2^-8 relative per weight
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * max(1.0, float(np.abs(want).max())))


def test_bpe_vocab_past_65793_tokens():
    """Granite's vocab (100,352) needs merges of three symbols: all tokens distinct, every
    merge rule joining two existing tokens into the next one."""
    from tinyggml.tools.testing import tiny_bpe_vocab
    tokens, types, merges = tiny_bpe_vocab(100352)
    assert len(tokens) == len(set(tokens)) == len(types) == 100352
    have = set(tokens)
    for m, t in zip(merges, tokens[-len(merges):]):
        a, b = m.split(" ")
        assert a in have and b in have and a + b == t


@pytest.mark.parametrize("preset", ["mamba-tiny", "mamba2-tiny"])
def test_distinct_layers_repeat_the_first_layers_bytes(tmp_path, preset):
    """distinct_layers=1: every layer holds layer 0's bytes, in its own place in the file, and
    the model runs; without it the layers differ."""
    same, own = tmp_path / "same.gguf", tmp_path / "own.gguf"
    make_model(preset, same, "q8_0", progress=False, distinct_layers=1)
    make_model(preset, own, "q8_0", progress=False)
    for path, repeated in ((same, True), (own, False)):
        r = gguf.GGUFReader(path)
        t = {x.name: x for x in r.tensors}
        l0 = [n for n in t if n.startswith("blk.0.")]
        assert l0 and {n.replace("blk.0.", "blk.1.") for n in l0} <= set(t)
        eq = [np.array_equal(t[n].data, t[n.replace("blk.0.", "blk.1.")].data) for n in l0]
        assert all(eq) if repeated else not all(eq)
        assert t["blk.0.ssm_in.weight"].data_offset != t["blk.1.ssm_in.weight"].data_offset
    assert np.isfinite(tinyggml.Model(same, n_threads=1).eval([1, 2, 3])).all()
    with pytest.raises(TinyGGMLError, match="distinct_layers"):
        make_model(preset, tmp_path / "x.gguf", "q8_0", progress=False, distinct_layers=-1)
