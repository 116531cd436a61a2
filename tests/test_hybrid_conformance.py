"""Hybrid models converted by llama.cpp's own converter, against transformers in float64
(tests/fixtures/hybrid, made by tools/make_hybrid_fixtures.py; its docstring says how).

F32 files against `<arch>.ref.npz`, with an F32 KV cache: max abs logit error at every position
<= max(4 x the model's float32-vs-float64 gap, 2e-5), along the prompt, the greedy
continuation (token by token) and two prompts evaluated together as two sequences; greedy
tokens equal. With the default F16 cache (llama.cpp's default too) the keys and values are
rounded to 11 bits, so the bound is llama.cpp's own error on the file. F16 / Q8_0 / Q4_0 files
against the float64 model of the file itself (`.deqref.npz`): no worse than llama.cpp's error on
the same file (`llamacpp_agreement.json`).
"""
import json
from pathlib import Path

import numpy as np
import pytest

import tinyggml
from reference.hybrid_np import RefHybrid

HYB = Path(__file__).resolve().parent / "fixtures" / "hybrid"
ARCHS = ["granitehybrid", "nemotron_h", "falcon-h1", "lfm2", "qwen35"]
AGREE = json.loads((HYB / "llamacpp_agreement.json").read_text())


def _npz(name):
    with np.load(HYB / name) as z:
        return {k: z[k] for k in z.files}


def _llama_err(arch, ot):
    """llama.cpp's max abs logit error on the file, per part of the fixture (as _run's)."""
    a = AGREE[arch]["files"][f"{arch}-{ot}.gguf"]
    return {"prompt": a["max_abs_err_prompt"], "greedy": a["max_abs_err_greedy_steps"],
            "multi": max(a["max_abs_err_multi0"], a["max_abs_err_multi1"])}


def _run(m, ref):
    """Our logits over what the fixture covers: the prompt at once, then the reference's greedy
    tokens one by one (each row compared with the reference's logits after that token), then
    the two other prompts as two sequences of one batch. Returns the max abs error of each part
    and the model's own free-running greedy continuation of the prompt."""
    m.reset()
    lp = m.eval(ref["tokens"])
    errs = {"prompt": float(np.abs(lp - ref["logits"]).max())}
    greedy = [int(np.argmax(lp[-1]))]
    e = 0.0
    # greedy_logits[i] are the logits after greedy_tokens[i] (greedy_tokens[0] is the prompt's
    # argmax): feed the reference tokens so that a near-tie cannot derail the comparison
    for i, t in enumerate(ref["greedy_tokens"][:-1]):
        row = m.eval([int(t)])[0]
        e = max(e, float(np.abs(row - ref["greedy_logits"][i + 1]).max()))
    errs["greedy"] = e
    m.reset()
    m.eval(ref["tokens"])
    for _ in range(len(ref["greedy_tokens"]) - 1):
        greedy.append(int(np.argmax(m.eval([greedy[-1]])[0])))
    m.reset()
    out = m.eval_batch({10: ref["multi0_tokens"], 11: ref["multi1_tokens"]})
    errs["multi"] = max(float(np.abs(out[10] - ref["multi0_logits"]).max()),
                        float(np.abs(out[11] - ref["multi1_logits"]).max()))
    return errs, greedy


_models = {}


def model(arch, ot, kv_type):
    key = (arch, ot, kv_type)
    if key not in _models:
        _models[key] = tinyggml.Model(HYB / f"{arch}-{ot}.gguf", n_threads=2, kv_type=kv_type)
    return _models[key]


@pytest.mark.parametrize("arch", ARCHS)
def test_f32_vs_transformers_float64(arch):
    ref = _npz(f"{arch}.ref.npz")
    tol = max(4 * float(ref["gap_f32_f64_max_abs"]), 2e-5)
    errs, greedy = _run(model(arch, "f32", "f32"), ref)
    print(f"{arch} f32, f32 cache: {errs} (tolerance {tol:.3g}; llama.cpp {_llama_err(arch, 'f32')})")
    for part, e in errs.items():
        assert e <= tol, f"{arch} {part}: max abs logit error {e:.3g} > {tol:.3g}"
    assert greedy == ref["greedy_tokens"].tolist()


@pytest.mark.parametrize("arch", ARCHS)
def test_f32_f16_cache_no_worse_than_llamacpp(arch):
    ref = _npz(f"{arch}.ref.npz")
    llama = _llama_err(arch, "f32")
    errs, greedy = _run(model(arch, "f32", "f16"), ref)
    print(f"{arch} f32, f16 cache: {errs} (llama.cpp, f16 cache: {llama})")
    # both round each key and value to the nearest F16 and land on nearly the same error; the
    # 5% is for the float32 sums around that rounding, which differ in order
    for part, e in errs.items():
        assert e <= llama[part] * 1.05, (part, errs, llama)
    assert greedy == ref["greedy_tokens"].tolist()


@pytest.mark.parametrize("ot", ["f16", "q8_0", "q4_0"])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kv_type", ["f32", "f16"])
def test_non_f32_vs_file_float64_no_worse_than_llamacpp(arch, ot, kv_type):
    deq = _npz(f"{arch}-{ot}.deqref.npz")
    llama = _llama_err(arch, ot)
    errs, greedy = _run(model(arch, ot, kv_type), deq)
    print(f"{arch} {ot}, {kv_type} cache: {errs} (llama.cpp {llama})")
    for part, e in errs.items():
        assert e <= llama[part], (part, errs, llama)
    assert greedy == deq["greedy_tokens"].tolist()


@pytest.mark.parametrize("arch", ARCHS)
def test_numpy_reference_reads_converter_files(arch):
    """The float64 numpy reference the random-file tests (test_hybrid.py) trust agrees with
    transformers on the converter's own files: both are float64, so to rounding."""
    ref = _npz(f"{arch}.ref.npz")
    got = RefHybrid(str(HYB / f"{arch}-f32.gguf")).forward(ref["tokens"])
    np.testing.assert_allclose(got, ref["logits"], atol=1e-5, rtol=0)
