"""Sampling properties: each filter keeps what it should, penalties follow llama.cpp's rule,
a seed makes runs reproducible."""
import numpy as np
import pytest

from tinyggml import TinyGGMLError
from tinyggml.sampling import (Sampler, SamplerParams, apply_penalties, min_p, softmax, top_k,
                               top_p)

rng = np.random.default_rng(0)
LOGITS = rng.standard_normal(1000) * 3


def kept(x):
    return set(np.flatnonzero(np.isfinite(x)).tolist())


@pytest.mark.parametrize("k", [1, 5, 40, 999])
def test_top_k_keeps_k_largest(k):
    out = top_k(LOGITS, k)
    assert kept(out) == set(np.argsort(-LOGITS)[:k].tolist())
    np.testing.assert_array_equal(out[list(kept(out))], LOGITS[list(kept(out))])
    assert kept(top_k(LOGITS, 0)) == set(range(1000))


@pytest.mark.parametrize("p", [0.01, 0.3, 0.9, 0.999])
def test_top_p_keeps_smallest_set_reaching_p(p):
    keep = kept(top_p(LOGITS, p))
    probs = softmax(LOGITS)
    order = np.argsort(-probs)
    n = len(keep)
    assert keep == set(order[:n].tolist())                 # the most likely ones
    assert probs[order[:n]].sum() >= p - 1e-12             # reaches p ...
    assert n == 1 or probs[order[:n - 1]].sum() < p        # ... and no smaller set does


@pytest.mark.parametrize("p", [0.0, 0.05, 0.5, 1.0])
def test_min_p(p):
    keep = kept(min_p(LOGITS, p))
    probs = softmax(LOGITS)
    assert keep == set(np.flatnonzero(probs >= p * probs.max()).tolist())
    assert len(keep) >= 1


def test_penalties_llamacpp_rule():
    x = np.array([2.0, -2.0, 1.0, 0.5])
    out = apply_penalties(x, [0, 1, 1, 3], repeat=2.0, presence=0.1, frequency=0.25)
    # positive divided, negative multiplied, then count*frequency + presence subtracted
    np.testing.assert_allclose(out, [2 / 2 - 0.25 - 0.1, -2 * 2 - 0.5 - 0.1, 1.0, 0.25 - 0.25 - 0.1])


def test_penalty_window():
    s = Sampler(temperature=0, repeat_penalty=100.0, penalty_last_n=2)
    x = np.array([5.0, 4.0, 3.0])
    for t in (0, 1, 2):
        s.accept(t)                        # window keeps only 1, 2
    assert s.sample(x) == 0
    s.accept(0)                            # now 2, 0
    assert s.sample(x) == 1


def test_greedy_and_seed_reproducible():
    assert Sampler(temperature=0).sample(LOGITS) == int(np.argmax(LOGITS))
    runs = []
    for seed in (7, 7, 8):
        s = Sampler(temperature=1.0, seed=seed)
        runs.append([s.sample(LOGITS) for _ in range(50)])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1
    assert runs[0] != runs[2]


def test_sampling_distribution_follows_temperature():
    x = np.array([0.0, np.log(3.0)])                   # p = 1/4, 3/4
    s = Sampler(temperature=1.0, seed=1, top_k=0, top_p=1.0, min_p=0.0)
    draws = np.array([s.sample(x) for _ in range(4000)])
    assert abs(draws.mean() - 0.75) < 0.03
    s = Sampler(temperature=0.5, seed=1, top_k=0, top_p=1.0, min_p=0.0)   # p ~ 1/10, 9/10
    draws = np.array([s.sample(x) for _ in range(4000)])
    assert abs(draws.mean() - 0.9) < 0.02


def test_top_k_1_is_greedy_even_hot():
    s = Sampler(temperature=5.0, top_k=1, seed=3)
    assert all(s.sample(LOGITS) == int(np.argmax(LOGITS)) for _ in range(20))


@pytest.mark.parametrize("kw", [dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5), dict(min_p=-0.1),
                                dict(repeat_penalty=0.0), dict(penalty_last_n=-1)])
def test_bad_params(kw):
    with pytest.raises(TinyGGMLError):
        Sampler(SamplerParams(**kw))
