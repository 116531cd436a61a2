"""F32 numerics: tinyggml's logits as close to float64 as a plain float32 evaluation gets.

Reference: the float64 numpy model of the file (tests/reference/mamba_np.py), token by token.
Yardstick: the same code in float32 throughout (RefModel(path, dtype=np.float32)): what
evaluating this recurrence in float32 costs, with no kernel of ours in it. For every F32
fixture and for random models of Mamba-Codestral's head shape that this file writes, on SEEDS
(random 1024-token prompts, then N_DECODE tokens one call each), every path: the prompt in one
call or token by token, the chunked and the recurrent Mamba-2 scan, SIMD and scalar kernels.
Each statistic of tinyggml's logit error against float64, pooled over the seeds and taken
over every position, must be within FACTOR times the same statistic of the yardstick:
- rms over all logits, and p99: the 99th percentile over positions of each position's max abs
  error. A systematic extra error shows in both (before issue 20's fixes, a sum over K in one
  chain put the prompt paths at 2.3x the yardstick's rms);
- max abs error (the issue's measure), on the fixtures. On the Codestral-shaped models (one
  head per gated-norm group of 64 channels) a group's values nearly vanish at some tokens
  (group rms 8e-4, under sqrt(eps) = 3e-3): the norm then multiplies whatever rounding error y
  carries by ~300, and the max is decided by those few positions, each evaluation's error there
  a draw from its rounding noise. Two plain float32 numpy evaluations that differ only in the
  memory order of ssm_in / ssm_out / the LM head (BLAS sums in another order) differ there by
  up to 2.2x in max (prompt seeds 0-5; tinyggml's ratio reached 3.9x there), and by at most 6%
  in rms and 12% in p99 (per seed): no factor on the max would be derived from the yardstick,
  so those models are held to rms and p99 only.
test_f32_error_after_8192_tokens holds one Mamba-2 fixture to the same after an 8192-token
prompt (no error that grows with the context).

Over a vocabulary of more than VOCAB_SAMPLE tokens, the statistics take the logits of a fixed
random VOCAB_SAMPLE of them, the same for tinyggml and the yardstick (the float64 LM head over
1040 x 50k logits per run was a third of the file's time); tools/numerics.py takes them all, and
prints the same statistics per path for any length (the 512 vs 8192 comparison) and any GGUF.
"""
import numpy as np
import pytest

import tinyggml
from conftest import FIXTURES, HAVE_FIXTURES, requires_fixtures
from reference.mamba_np import RefModel
from tinyggml.backend import set_simd, simd_compiled
from reference.numerics import logit_errors, summarize, write_codestral_shape

FACTOR = 1.5                  # issue 20: within 1.5x of float32's own error (stretch: 1.0x)
SEEDS = (0, 1)
N_PROMPT, N_DECODE = 1024, 16
KERNELS = ("simd", "scalar") if simd_compiled() else ("scalar",)
VOCAB_SAMPLE = 8192

FIXTURE_FILES = sorted((FIXTURES / "models").glob("*-f32.gguf")) if HAVE_FIXTURES else []
MODELS = [pytest.param(f.name[:-len("-f32.gguf")], marks=requires_fixtures) for f in FIXTURE_FILES]
MODELS.append("codestral-shape")
if not FIXTURE_FILES:                 # a fresh clone: say what is not tested
    MODELS.append(pytest.param("fixtures", marks=requires_fixtures))


class Case:
    """One model over SEEDS: the prompts, the float64 rows and the yardstick's errors."""

    def __init__(self, name, tmp):
        self.name, self.runs = name, []
        for seed in SEEDS:
            if name == "codestral-shape":
                path = tmp / f"codestral-shape-{seed}.gguf"
                write_codestral_shape(path, seed)
            else:
                path = FIXTURES / "models" / f"{name}-f32.gguf"
            ref = RefModel(path)
            n_vocab = ref.hparams["n_vocab"]
            self.vocab = (np.sort(np.random.default_rng(0).choice(n_vocab, VOCAB_SAMPLE, False))
                          if n_vocab > VOCAB_SAMPLE else slice(None))
            toks = np.random.default_rng(1000 * seed + N_PROMPT).integers(
                0, n_vocab, N_PROMPT + N_DECODE)
            hidden, head = ref.forward(toks, logits=False)[2], ref.lm_head[self.vocab]
            r32 = RefModel(path, np.float32)
            plain = r32.forward(toks, logits=False)[2] @ r32.lm_head[self.vocab].T
            assert plain.dtype == np.float32
            self.runs.append((path, toks, hidden, head, logit_errors(hidden, head, plain)))
        self.arch, self.n_vocab = ref.arch, head.shape[0]
        self.float32 = summarize([r[4] for r in self.runs], self.n_vocab)

    def tinyggml(self, mode, scan, kernels):
        """tinyggml's error statistics on this path, pooled over the seeds."""
        errs = []
        set_simd(kernels == "simd")
        try:
            for path, toks, hidden, lm_head, _ in self.runs:
                m = tinyggml.Model(path, n_threads=2, scan=scan)
                if mode == "once":
                    got = [m.eval(toks[:N_PROMPT])] + [m.eval([t]) for t in toks[N_PROMPT:]]
                else:
                    got = [m.eval([t]) for t in toks]
                errs.append(logit_errors(hidden, lm_head, np.concatenate(got)[:, self.vocab]))
        finally:
            set_simd(True)
        return summarize(errs, self.n_vocab)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    made = {}

    def get(name):
        if name not in made:
            made[name] = Case(name, tmp_path_factory.mktemp("numerics"))
        return made[name]
    return get


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("mode", ["once", "tbt"])
@pytest.mark.parametrize("model", MODELS)
def test_f32_logits_within_float32_error(cases, model, mode, kernels):
    """A 1024-token prompt at once (ubatches of 512) or token by token, then 16 decoded
    tokens; both Mamba-2 scans (Mamba-1 has one)."""
    c = cases(model)
    checked = ("rms", "p99") if model == "codestral-shape" else ("rms", "p99", "max")
    for scan in ("chunked", "recurrent") if c.arch == "mamba2" else ("auto",):
        got = c.tinyggml(mode, scan, kernels)
        for k in checked:
            assert got[k] <= FACTOR * c.float32[k], (
                f"{model} {mode} {scan} {kernels}: {k} error {got[k]:.3g} against float64, "
                f"{got[k] / c.float32[k]:.2f}x plain float32 numpy's {c.float32[k]:.3g} "
                f"(seeds {SEEDS})")


@requires_fixtures
def test_f32_error_after_8192_tokens():
    """Long context (Mamba-2, the chunked prompt path): after an 8192-token prompt (ubatches of
    512), the logits of its last 512 positions and of 16 decoded tokens are as close to float64
    as float32 numpy's after the same prompt (rms, p99 and max within FACTOR): no error that
    grows with the context. One seed; tools/numerics.py -n 512,8192 has every model and path."""
    path = FIXTURES / "models" / "mamba2-tiny-g2-spm-f32.gguf"
    T, W = 8192, 512
    ref, r32 = RefModel(path), RefModel(path, np.float32)
    toks = np.random.default_rng(T).integers(0, ref.hparams["n_vocab"], T + N_DECODE)
    hidden = ref.forward(toks, logits=False)[2][T - W:]
    plain = r32.forward(toks, logits=False)[2][T - W:] @ r32.lm_head.T
    m = tinyggml.Model(path, n_threads=2)
    m.eval(toks[:T - W], logits="last")
    got = np.concatenate([m.eval(toks[T - W:T])] + [m.eval([t]) for t in toks[T:]])
    want = summarize([logit_errors(hidden, ref.lm_head, plain)], ref.hparams["n_vocab"])
    have = summarize([logit_errors(hidden, ref.lm_head, got)], ref.hparams["n_vocab"])
    for k in ("rms", "p99", "max"):
        assert have[k] <= FACTOR * want[k], (
            f"after {T} tokens: {k} error {have[k]:.3g}, {have[k] / want[k]:.2f}x float32 "
            f"numpy's {want[k]:.3g}")
