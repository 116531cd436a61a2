"""tinyggml.tools.testing.write_random_model: same GGUF layout as llama.cpp's converter, and a
model that the numpy reference runs with realistic, finite numbers."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference.mamba_np import RefModel, open_gguf  # noqa: E402
from tinyggml.tools.testing import tiny_bpe_vocab, write_random_model  # noqa: E402

from conftest import FIXTURES, requires_fixtures  # noqa: E402

needs_fixtures = requires_fixtures

# fixture file -> write_random_model arguments giving the same hparams (README "Models")
LAYOUT_CASES = {
    "mamba1-tiny-f16": dict(arch="mamba", n_embd=64, n_layer=2, d_state=16, n_vocab=50280,
                            wtype="f16"),
    "mamba2-tiny-f16": dict(arch="mamba2", n_embd=64, n_layer=2, d_state=32, head_dim=16,
                            n_vocab=50288, wtype="f16"),
    "mamba2-tiny-g2-spm-f32": dict(arch="mamba2", n_embd=128, n_layer=2, d_state=32,
                                   head_dim=32, n_group=2, n_vocab=4000, tied=False),
    "falcon-mamba-tiny-f32": dict(arch="mamba", n_embd=64, n_layer=2, d_state=16,
                                  n_vocab=50280, dt_b_c_rms=True),
}


def fields(reader, skip_tokenizer):
    """{key: (value types, value)}; arrays by length only."""
    out = {}
    for key, f in reader.fields.items():
        if skip_tokenizer and key.startswith("tokenizer."):
            continue
        value = f.contents() if len(f.data) == 1 else len(f.data)
        out[key] = ([int(t) for t in f.types], value)
    return out


def tensor_layout(reader):
    return [(t.name, tuple(int(n) for n in t.shape), t.tensor_type.name) for t in reader.tensors]


@needs_fixtures
@pytest.mark.parametrize("name", LAYOUT_CASES)
def test_layout_matches_converter(name, tmp_path):
    ref = open_gguf(FIXTURES / "models" / f"{name}.gguf")
    path = tmp_path / "random.gguf"
    write_random_model(path, **LAYOUT_CASES[name])
    got = open_gguf(path)
    spm = "spm" in name                 # our vocab is always gpt2; compare the rest
    want_kv, got_kv = fields(ref, spm), fields(got, spm)
    for kv in (want_kv, got_kv):        # differ by design (and the merge count, by vocab)
        kv.pop("general.name")
        kv.pop("tokenizer.ggml.pre", None)
        kv.pop("tokenizer.ggml.merges", None)
    if spm:                             # counts differ only by the tokenizer keys left out
        for kv in (want_kv, got_kv):
            kv.pop("GGUF.kv_count")
    assert got_kv == want_kv
    assert set(got.fields) >= {"tokenizer.ggml.pre", "tokenizer.ggml.merges"}
    assert tensor_layout(got) == tensor_layout(ref)
    assert got.alignment == ref.alignment


def test_tiny_bpe_vocab():
    for n_vocab in (3, 40, 257, 258, 300, 1000):
        tokens, types, merges = tiny_bpe_vocab(n_vocab)
        assert len(tokens) == len(types) == n_vocab == len(set(tokens))
        assert tokens[0] == "<|endoftext|>" and types[0] == 3 and set(types[1:]) == {1}
        ids = {t: i for i, t in enumerate(tokens)}
        assert merges
        for m in merges:
            a, b = m.split(" ")
            assert a in ids and b in ids and a + b in ids
        if n_vocab >= 258:              # every byte has its symbol
            assert len({t for t in tokens[1:] if len(t) == 1}) == 256
    with pytest.raises(ValueError):
        tiny_bpe_vocab(2)


RANDOM_CASES = {
    "mamba1": dict(arch="mamba", n_embd=32, n_layer=2, d_state=8, n_vocab=300),
    "falcon": dict(arch="mamba", n_embd=48, n_layer=3, d_state=16, n_vocab=260,
                   dt_b_c_rms=True, tied=False, seed=3),
    "mamba1-f16": dict(arch="mamba", n_embd=32, n_layer=2, d_state=8, n_vocab=300,
                       wtype="f16", d_conv=3, dt_rank=5),
    "mamba2": dict(arch="mamba2", n_embd=32, n_layer=2, d_state=16, head_dim=16,
                   n_vocab=300),
    "mamba2-g2-f16": dict(arch="mamba2", n_embd=48, n_layer=2, d_state=8, head_dim=12,
                          n_group=2, n_vocab=290, tied=False, wtype="f16", seed=7),
}


@pytest.mark.parametrize("name", RANDOM_CASES)
def test_random_model_runs_in_reference(name, tmp_path):
    path = tmp_path / f"{name}.gguf"
    hp = write_random_model(path, **RANDOM_CASES[name])
    m = RefModel(path)
    assert m.arch == RANDOM_CASES[name]["arch"]
    for key, value in hp.items():
        assert m.hparams[key] == pytest.approx(value, rel=1e-6), key

    tokens = np.random.default_rng(1).integers(0, hp["n_vocab"], 19)
    logits, hidden, final = m.forward(tokens)
    assert logits.shape == (19, hp["n_vocab"]) and hidden.shape == (hp["n_layer"] + 1, 19,
                                                                    hp["n_embd"])
    assert np.isfinite(logits).all() and np.isfinite(hidden).all()
    assert 0.3 < logits.std() < 30      # neither vanishing nor exploding
    assert len(set(np.argmax(logits, axis=1))) > 1

    state, parts = m.new_state(), []
    for piece in (tokens[:7], tokens[7:8], tokens[8:]):
        parts.append(m.forward(piece, state))
    for k, whole in enumerate((logits, hidden, final)):
        joined = np.concatenate([p[k] for p in parts], axis=-2)
        assert np.max(np.abs(joined - whole)) < 1e-12


def test_random_model_is_seeded(tmp_path):
    args = dict(arch="mamba2", n_embd=16, n_layer=1, d_state=4, head_dim=8, n_vocab=50)
    write_random_model(tmp_path / "a.gguf", **args)
    write_random_model(tmp_path / "b.gguf", **args)
    write_random_model(tmp_path / "c.gguf", **args, seed=1)
    a, b, c = ((tmp_path / f"{n}.gguf").read_bytes() for n in "abc")
    assert a == b and a != c


def test_bad_arguments(tmp_path):
    path = tmp_path / "x.gguf"
    with pytest.raises(ValueError):
        write_random_model(path, "llama", n_embd=16, n_layer=1, d_state=4, n_vocab=50)
    with pytest.raises(ValueError):
        write_random_model(path, "mamba2", n_embd=16, n_layer=1, d_state=4, n_vocab=50,
                           head_dim=12)
    with pytest.raises(ValueError):
        write_random_model(path, "mamba2", n_embd=16, n_layer=1, d_state=4, n_vocab=50,
                           dt_b_c_rms=True)
    with pytest.raises(ValueError):
        write_random_model(path, "mamba", n_embd=16, n_layer=1, d_state=4, n_vocab=50,
                           wtype="q8_0")
