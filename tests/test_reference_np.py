"""The float64 numpy reference (tests/reference/mamba_np.py) against the shared fixtures.

`<name>.ref.npz` is transformers run in float64 on the HF checkpoint; the f32 GGUF differs
from it only by A = -exp(A_log) rounded to float32 (≤ ~2e-8 on the hidden states).
`<name>-<type>.deqref.npz` is a float64 forward on the file's own dequantized weights, so it
must agree to rounding (its authors used eps = 1e-5 where the GGUF stores float32(1e-5),
which accounts for the ~1e-10 left). Stored logits are float32, hence the 1e-6 tolerance.
See ../shared/fixtures/README.md.
"""
import functools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference.mamba_np import RefModel  # noqa: E402

from conftest import FIXTURES, requires_fixtures  # noqa: E402

pytestmark = requires_fixtures

# reference npz -> (GGUF file, tolerance on hidden states)
REF_TOL, DEQ_TOL = 1e-7, 1e-9
CASES = {
    "mamba1-tiny.ref": ("mamba1-tiny-f32", REF_TOL),
    "mamba2-tiny.ref": ("mamba2-tiny-f32", REF_TOL),
    "mamba2-tiny-g2-spm.ref": ("mamba2-tiny-g2-spm-f32", REF_TOL),
    "falcon-mamba-tiny.ref": ("falcon-mamba-tiny-f32", REF_TOL),
    "mamba1-tiny-f16.deqref": ("mamba1-tiny-f16", DEQ_TOL),
    "mamba2-tiny-f16.deqref": ("mamba2-tiny-f16", DEQ_TOL),
    "mamba2-tiny-q8_0.deqref": ("mamba2-tiny-q8_0", DEQ_TOL),
    "mamba2-tiny-g2-spm-q8_0.deqref": ("mamba2-tiny-g2-spm-q8_0", DEQ_TOL),
    "mamba2-tiny-g2-spm-q4_0.deqref": ("mamba2-tiny-g2-spm-q4_0", DEQ_TOL),
}
REF_ONLY = [c for c in CASES if c.endswith(".ref")]
LOGIT_TOL = 1e-6    # the stored logits are float64 values rounded to float32 (|logit| ≤ 8.4)


@functools.lru_cache(maxsize=None)
def model(case):
    return RefModel(FIXTURES / "models" / f"{CASES[case][0]}.gguf")


@functools.lru_cache(maxsize=None)
def ref(case):
    with np.load(FIXTURES / "reference" / f"{case}.npz") as z:
        return {k: z[k] for k in z.files}


def max_abs(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)))


@pytest.mark.parametrize("case", CASES)
def test_prompt(case):
    m, r, tol = model(case), ref(case), CASES[case][1]
    logits, hidden, final = m.forward(r["tokens"])
    assert logits.shape == (len(r["tokens"]), m.hparams["n_vocab"])
    assert max_abs(logits[r["logit_positions"]], r["logits"]) <= LOGIT_TOL
    assert max_abs(hidden, r["layer_hidden"]) <= tol
    assert max_abs(final, r["final_norm_hidden"]) <= 5 * tol


@pytest.mark.parametrize("case", CASES)
def test_greedy(case):
    m, r = model(case), ref(case)
    tokens, margins = m.greedy(r["tokens"], len(r["greedy_tokens"]))
    np.testing.assert_array_equal(tokens, r["greedy_tokens"])
    assert max_abs(margins, r["greedy_margin"]) <= 1e-6


@pytest.mark.parametrize("case", CASES)
def test_multi_prompts_alone(case):
    m, r, tol = model(case), ref(case), CASES[case][1]
    for i in range(2):
        toks = r[f"multi{i}_tokens"]
        logits, hidden, final = m.forward(toks)
        assert max_abs(logits[r[f"multi{i}_logit_positions"]], r[f"multi{i}_logits"]) <= LOGIT_TOL
        assert max_abs(final, r[f"multi{i}_final_norm_hidden"]) <= 5 * tol
        if f"multi{i}_layer_hidden" in r:
            assert max_abs(hidden, r[f"multi{i}_layer_hidden"]) <= tol
        greedy, _ = m.greedy(toks, len(r[f"multi{i}_greedy_tokens"]))
        np.testing.assert_array_equal(greedy, r[f"multi{i}_greedy_tokens"])


@pytest.mark.parametrize("case", REF_ONLY)
def test_full_sequence_in_pieces(case):
    """seq_tokens (prompt + greedy) was a full recompute; feed it in uneven pieces."""
    m, r = model(case), ref(case)
    state, finals, start = m.new_state(), [], 0
    for n in (1, 6, 17, 3, 13):
        finals.append(m.forward(r["seq_tokens"][start:start + n], state)[2])
        start += n
    assert start == len(r["seq_tokens"])
    assert max_abs(np.concatenate(finals), r["seq_final_norm_hidden"]) <= 5 * REF_TOL


def test_decode_step_logits():
    """C keeps the raw logits of every decode step: step k sees prompt + greedy[:k]."""
    case = "mamba2-tiny-g2-spm.ref"
    m, r = model(case), ref(case)
    state = m.new_state()
    last = m.forward(r["tokens"], state)[0][-1:]
    steps = m.forward(r["greedy_tokens"][:-1], state)[0]
    assert max_abs(np.concatenate([last, steps]), r["greedy_step_logits"]) <= LOGIT_TOL


@pytest.mark.parametrize("case", ["mamba1-tiny.ref", "mamba2-tiny-g2-spm.ref",
                                  "falcon-mamba-tiny.ref"])
def test_pieces_equal_whole(case):
    m, r = model(case), ref(case)
    whole = m.forward(r["tokens"])
    state, parts, start = m.new_state(), [], 0
    for n in (5, 1, 18):
        parts.append(m.forward(r["tokens"][start:start + n], state))
        start += n
    for k in range(3):
        joined = np.concatenate([p[k] for p in parts], axis=-2)
        assert max_abs(joined, whole[k]) <= 1e-12


def test_hparams():
    hp = model("mamba2-tiny-g2-spm.ref").hparams
    assert (hp["n_embd"], hp["n_layer"], hp["d_inner"], hp["d_state"]) == (128, 2, 256, 32)
    assert (hp["n_head"], hp["n_group"], hp["head_dim"], hp["n_vocab"]) == (8, 2, 32, 4000)
    assert not hp["tied"]
    hp = model("falcon-mamba-tiny.ref").hparams
    assert hp["dt_b_c_rms"] and hp["tied"] and hp["dt_rank"] == 4 and hp["d_conv"] == 4
    assert not model("mamba1-tiny.ref").hparams["dt_b_c_rms"]
    assert abs(hp["eps"] - 1e-5) < 1e-12
