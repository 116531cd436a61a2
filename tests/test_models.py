"""Model conformance on the shared fixtures (../shared/fixtures, see its README).

F32 files against transformers float64 (`<name>.ref.npz`): max abs logit error at every position
<= max(4 x that model's float32-vs-float64 gap, 2e-5), along the prompt and the greedy
continuation; greedy tokens equal. F16 files against the float64 model of the file itself
(`.deqref.npz`): no worse than llama.cpp's error on the same file. When logits disagree, the
residual stream (`layer_hidden`) names the first layer that diverges.
"""
import json

import numpy as np
import pytest

import tinyggml
from conftest import FIXTURES, close, requires_fixtures


pytestmark = requires_fixtures

F32_MODELS = ["mamba1-tiny", "mamba2-tiny", "mamba2-tiny-g2-spm", "falcon-mamba-tiny"]
F16_FILES = {"mamba1-tiny-f16": "mamba1-tiny", "mamba2-tiny-f16": "mamba2-tiny"}


def _npz(name):
    with np.load(FIXTURES / "reference" / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def _head(path):
    """The LM head in float64 (output.weight, or token_embd.weight when tied)."""
    import gguf
    r = gguf.GGUFReader(path)
    t = {t.name: t for t in r.tensors}
    w = t.get("output.weight", t["token_embd.weight"])
    return gguf.quants.dequantize(w.data, w.tensor_type).astype(np.float64)


_cache = {}


def model_and_head(file):
    if file not in _cache:
        path = FIXTURES / "models" / f"{file}.gguf"
        _cache[file] = (tinyggml.Model(path, n_threads=2), _head(path))
    m, head = _cache[file]
    m.reset()
    return m, head


def first_divergence(m, tokens, layer_hidden, tol):
    """'layer k' of the first residual-stream tensor that differs by more than tol."""
    m.reset(99)
    _, hidden = m.eval_hidden(tokens, seq_id=99)
    m.reset(99)
    for k in range(len(hidden)):
        err = np.abs(hidden[k] - layer_hidden[k]).max()
        if err > tol:
            return f"first divergence at {'embeddings' if k == 0 else f'block {k - 1}'} (max abs {err:.3g})"
    return "residual stream agrees; the difference is in the final norm / LM head"


def assert_close(m, got, want, tol, tokens, layer_hidden, what):
    err = np.abs(got - want).max()
    if err > tol:
        where = first_divergence(m, tokens, layer_hidden, 1e-4) if layer_hidden is not None else ""
        pytest.fail(f"{what}: max abs logit error {err:.3g} > {tol:.3g}. {where}")
    return err


@pytest.mark.parametrize("name", F32_MODELS)
def test_f32_prompt_and_greedy_vs_float64(name):
    ref = _npz(f"{name}.ref")
    m, head = model_and_head(f"{name}-f32")
    tol = max(4 * float(ref["gap_f32_f64_max_abs"]), 2e-5)
    prompt = ref["tokens"]
    logits = m.eval(prompt)
    # every prompt position, rebuilt in float64 from the reference final-norm output
    want = ref["final_norm_hidden"] @ head.T
    worst = assert_close(m, logits, want, tol, prompt, ref["layer_hidden"], f"{name} prompt")
    # the stored float32-rounded rows too
    assert_close(m, logits[ref["logit_positions"]], ref["logits"], tol, prompt, None, f"{name} stored rows")
    # greedy continuation, one token at a time, checked at every step against seq_tokens
    seq_want = ref["seq_final_norm_hidden"] @ head.T
    got_tokens = [int(np.argmax(logits[-1]))]
    for step in range(len(ref["greedy_tokens"]) - 1):
        step_logits = m.eval([got_tokens[-1]])[0]
        pos = len(prompt) + step
        worst = max(worst, assert_close(m, step_logits, seq_want[pos], tol, None, None,
                                        f"{name} greedy step {step}"))
        got_tokens.append(int(np.argmax(step_logits)))
    assert got_tokens == ref["greedy_tokens"].tolist()
    print(f"{name}-f32: max abs logit error {worst:.3g} over the prompt and 15 greedy steps "
          f"(tolerance {tol:.3g})")


@pytest.mark.parametrize("name", F32_MODELS)
def test_two_prompts_batched_equal_reference(name):
    """Both multi prompts in one eval_batch (different lengths), then 8 batched greedy steps."""
    ref = _npz(f"{name}.ref")
    m, head = model_and_head(f"{name}-f32")
    tol = max(4 * float(ref["gap_f32_f64_max_abs"]), 2e-5)
    toks = {i: ref[f"multi{i}_tokens"] for i in (0, 1)}
    out = m.eval_batch(toks)
    for i in (0, 1):
        want = ref[f"multi{i}_final_norm_hidden"] @ head.T
        assert_close(m, out[i], want, tol, None, None, f"{name} multi{i}")
    last = {i: int(np.argmax(out[i][-1])) for i in (0, 1)}
    gen = {0: [last[0]], 1: [last[1]]}
    for _ in range(7):
        step = m.eval_batch({i: [gen[i][-1]] for i in (0, 1)})
        for i in (0, 1):
            gen[i].append(int(np.argmax(step[i][0])))
    for i in (0, 1):
        assert gen[i] == ref[f"multi{i}_greedy_tokens"].tolist()


@pytest.mark.parametrize("name", ["mamba2-tiny-g2-spm", "falcon-mamba-tiny"])
def test_residual_stream_matches_layer_hidden(name):
    ref = _npz(f"{name}.ref")
    m, _ = model_and_head(f"{name}-f32")
    _, hidden = m.eval_hidden(ref["tokens"])
    assert hidden.shape == ref["layer_hidden"].shape
    np.testing.assert_allclose(hidden, ref["layer_hidden"], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", F32_MODELS)
def test_chunked_prompt_equals_whole(name):
    """At once, in chunks of 3 and of 7, token by token: the same logits."""
    ref = _npz(f"{name}.ref")
    m, _ = model_and_head(f"{name}-f32")
    toks = ref["seq_tokens"]
    whole = m.eval(toks)
    for chunk in (3, 7, 1):
        m.reset()
        parts = [m.eval(toks[i:i + chunk]) for i in range(0, len(toks), chunk)]
        close(np.concatenate(parts), whole, err_msg=f"chunks of {chunk}")


@pytest.mark.parametrize("name", ["mamba2-tiny", "mamba2-tiny-g2-spm"])
@pytest.mark.parametrize("chunk", [4, 7, 64])
def test_ssd_chunked_scan_vs_float64(name, chunk):
    """The chunked (SSD) scan, forced for the whole prompt + continuation in chunks of 4 / 7 /
    64 tokens, against transformers float64 at every position, and equal to the recurrence."""
    ref = _npz(f"{name}.ref")
    path = FIXTURES / "models" / f"{name}-f32.gguf"
    _, head = model_and_head(f"{name}-f32")
    tol = max(4 * float(ref["gap_f32_f64_max_abs"]), 2e-5)
    toks = ref["seq_tokens"]
    got = tinyggml.Model(path, n_threads=2, scan="chunked", ssd_chunk=chunk).eval(toks)
    assert_close(None, got, ref["seq_final_norm_hidden"] @ head.T, tol, None, None, f"{name} chunked")
    rec = tinyggml.Model(path, n_threads=2, scan="recurrent").eval(toks)
    close(got, rec, err_msg="chunked vs recurrent")


QUANT_FILES = {"mamba2-tiny-q8_0": "mamba2-tiny", "mamba2-tiny-g2-spm-q8_0": "mamba2-tiny-g2-spm",
               "mamba2-tiny-g2-spm-q4_0": "mamba2-tiny-g2-spm"}
NON_F32_FILES = {**F16_FILES, **QUANT_FILES}


def kl_and_top1(p_logits, q_logits):
    """Mean KL(P || Q) over positions and top-1 agreement, as llama-perplexity
    --kl-divergence reports them (P: the F32 model, Q: the quantized one)."""
    p = p_logits.astype(np.float64)
    q = q_logits.astype(np.float64)
    lp = p - p.max(1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    lq = q - q.max(1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(1, keepdims=True))
    kl = (np.exp(lp) * (lp - lq)).sum(1)
    return kl.mean(), (p.argmax(1) == q.argmax(1)).mean()


@pytest.mark.parametrize("file", sorted(NON_F32_FILES))
def test_non_f32_vs_file_float64_no_worse_than_llamacpp(file):
    """F16 / Q8_0 / Q4_0 files against the float64 model of the file itself (.deqref.npz): no
    worse than llama.cpp's error on the same file (and within 5e-3), same argmax everywhere,
    same greedy continuation. (F16 is widened exactly; quantized types use integer dots with
    int16 activations, which is why they land far inside llama.cpp's error.)"""
    name = NON_F32_FILES[file]
    deq = _npz(f"{file}.deqref")
    agree = json.loads((FIXTURES / "reference" / "llamacpp_agreement.json").read_text())
    llama_err = agree[name]["files"][f"{file}.gguf"]["file_exact_f64"]["llamacpp_prompt_logits_max_abs"]
    m, head = model_and_head(file)
    logits = m.eval(deq["tokens"])
    want = deq["final_norm_hidden"] @ head.T
    err = assert_close(m, logits, want, min(llama_err, 5e-3), deq["tokens"], deq["layer_hidden"], file)
    # token by token: quantized weights then take the integer-dot path (int16 activations)
    m.reset(7)
    one = np.concatenate([m.eval([t], seq_id=7) for t in deq["tokens"]])
    m.reset(7)
    err1 = assert_close(m, one, want, min(llama_err, 5e-3), None, None, f"{file} token by token")
    print(f"{file}: max abs {err:.3g} prompt at once, {err1:.3g} token by token "
          f"(llama.cpp {llama_err:.3g})")
    assert np.argmax(logits, 1).tolist() == np.argmax(want, 1).tolist()
    # greedy continuation of the file's own float64 model
    got = [int(np.argmax(logits[-1]))]
    for _ in range(len(deq["greedy_tokens"]) - 1):
        got.append(int(np.argmax(m.eval([got[-1]])[0])))
    assert got == deq["greedy_tokens"].tolist()


@pytest.mark.parametrize("file", sorted(QUANT_FILES))
def test_quantized_kl_divergence_vs_f32_twin(file):
    """KL divergence and top-1 agreement against the F32 file over the prompt + greedy
    sequence (llama-perplexity --kl-divergence style). Bounds from measurement, with margin:
    these random models amplify quantization far more than trained ones."""
    name = QUANT_FILES[file]
    ref = _npz(f"{name}.ref")
    toks = ref["seq_tokens"]
    mq, _ = model_and_head(file)
    mf, _ = model_and_head(f"{name}-f32")
    kl, top1 = kl_and_top1(mf.eval(toks), mq.eval(toks))
    print(f"{file}: mean KL {kl:.4g}, top-1 {top1:.3f}")
    bound = {"q8_0": (2e-3, 0.9), "q4_0": (0.1, 0.45)}[file.rsplit("-", 1)[1]]
    assert kl < bound[0] and top1 >= bound[1]
