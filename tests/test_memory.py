"""The memory interface (tinyggml/memory.py): fixed slots, copy, save/load, clear, and the
plan cache that does not depend on the number of sequences."""
import numpy as np
import pytest

import tinyggml
from tinyggml.memory import Memory, RecurrentState
from tinyggml.tools.testing import write_random_model


@pytest.fixture(scope="module", params=["mamba", "mamba2"])
def path(request, tmp_path_factory):
    p = tmp_path_factory.mktemp("mem") / f"{request.param}.gguf"
    kw = dict(head_dim=8, n_group=2) if request.param == "mamba2" else {}
    write_random_model(p, request.param, n_embd=32, n_layer=2, d_state=8, n_vocab=97, seed=5, **kw)
    return p


def toks(n, seed):
    return np.random.default_rng(seed).integers(0, 97, n).tolist()


def test_recurrent_state_is_a_memory(path):
    m = tinyggml.Model(path, n_threads=1, n_seq_max=3)
    assert isinstance(m.memory, Memory) and isinstance(m.memory, RecurrentState)
    assert m.memory is m.state and m.n_seq_max == 3
    conv, ssm = m.hparams.state_shapes()
    assert m.memory.bytes_per_sequence == 4 * m.hparams.n_layer * (np.prod(conv) + np.prod(ssm))


def test_copy_continues_alike(path):
    m = tinyggml.Model(path, n_threads=2, n_seq_max=4)
    m.eval(toks(9, 1), seq_id=0)
    m.memory.seq_copy(0, 7)
    a, b = m.eval(toks(3, 2), seq_id=0), m.eval(toks(3, 2), seq_id=7)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(tinyggml.TinyGGMLError, match="no state"):
        m.memory.seq_copy(42, 1)


def test_save_load_into_another_model(path):
    m = tinyggml.Model(path, n_threads=2)
    m.eval(toks(11, 3), seq_id=5)
    blob = m.memory.seq_save(5)
    assert len(blob) == m.memory.bytes_per_sequence
    want = m.eval(toks(4, 4), seq_id=5)
    other = tinyggml.Model(path, n_threads=1)
    other.eval(toks(2, 9), seq_id=1)                   # another sequence, untouched by the load
    before = other.memory.seq_save(1)
    other.memory.seq_load(3, blob)
    np.testing.assert_array_equal(other.eval(toks(4, 4), seq_id=3), want)
    assert other.memory.seq_save(1) == before
    with pytest.raises(tinyggml.TinyGGMLError, match="bytes"):
        other.memory.seq_load(3, blob[:-1])


def test_clear_frees_and_zeroes(path):
    m = tinyggml.Model(path, n_threads=1, n_seq_max=2)
    first = m.eval(toks(5, 6), seq_id=0)
    m.eval(toks(5, 7), seq_id=1)
    m.reset(0)
    assert not m.memory.has(0) and m.memory.has(1)
    assert m.memory.seq_save(0) == bytes(m.memory.bytes_per_sequence)
    np.testing.assert_array_equal(m.eval(toks(5, 6), seq_id=2), first)   # slot 0 reused, zeroed
    m.reset()
    assert not m.memory.slot_of


def test_one_plan_for_any_number_of_sequences(path):
    """Continuous batching changes the number of sequences every step: the graph of a ubatch
    depends on its token count and logit rows only, and each sequence gets what it gets alone."""
    m = tinyggml.Model(path, n_threads=2, n_seq_max=8)
    alone = {}
    for sid in range(4):
        solo = tinyggml.Model(path, n_threads=2, n_seq_max=1)
        alone[sid] = solo.eval([2 * sid + 1, 2 * sid + 3])
    # 8 tokens each step, from 4, 2 and 3 sequences
    out = m.eval_batch({0: [1, 3], 1: [3, 5], 2: [5, 7], 3: [7, 9]})
    n_plans = len(m._compiled)
    for sid in range(4):
        np.testing.assert_array_equal(out[sid], alone[sid])
    m.reset()
    out = m.eval_batch({0: [1, 3], 4: [2, 5, 1, 1, 1, 1]})
    np.testing.assert_array_equal(out[0], alone[0])
    m.reset()
    out = m.eval_batch({2: [5, 7], 5: [3, 3, 3], 6: [1, 1, 1]})
    np.testing.assert_array_equal(out[2], alone[2])
    assert len(m._compiled) == n_plans == 1


def test_n_seq_max_checked(path):
    with pytest.raises(tinyggml.TinyGGMLError, match="n_seq_max"):
        tinyggml.Model(path, n_seq_max=0)
