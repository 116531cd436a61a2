"""Fuzzing the loader: GGUF files that lie in every way a header can, and byte-level mutations
of real ones, must load (and then run) or be refused with a ModelLoadError naming the file;
never another exception, a crash or a hang. The same for state blobs.

A quick run is part of the suite; TINYGGML_FUZZ_EXAMPLES=100000 runs the long one:
    TINYGGML_FUZZ_EXAMPLES=100000 python -m pytest -q tests/test_fuzz.py
"""
import os
import struct
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyggml
from conftest import FIXTURES, requires_fixtures
from tinyggml.errors import ModelLoadError, TinyGGMLError
from tinyggml.gguf_reader import GGUFReader
from tinyggml.tools.testing import write_random_model

N = int(os.environ.get("TINYGGML_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=N, deadline=None, derandomize=N <= 1000,
                suppress_health_check=list(HealthCheck))

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
        U64: "<Q", I64: "<q", F64: "<d"}


def _str(s) -> bytes:
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack("<Q", len(b)) + b


def _value(vtype, v, etype=None) -> bytes:
    if vtype == STR:
        return _str(v)
    if vtype == ARR:
        return struct.pack("<IQ", etype, len(v)) + b"".join(_value(etype, x) for x in v)
    return struct.pack(_FMT[vtype], v)


def serialize(kvs, tensors, n_tensors=None, n_kv=None, version=3, align=32) -> bytes:
    """kvs: [(key, vtype, value, etype)], tensors: [(name, dims, ttype, offset, data)]; the
    counts and the version may lie."""
    out = [b"GGUF", struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                len(kvs) if n_kv is None else n_kv)]
    for key, vtype, value, etype in kvs:
        out += [_str(key), struct.pack("<I", vtype), _value(vtype, value, etype)]
    for name, dims, ttype, offset, _ in tensors:
        out += [_str(name), struct.pack("<I", len(dims)), b"".join(struct.pack("<Q", d) for d in dims),
                struct.pack("<IQ", ttype, offset)]
    head = b"".join(out)
    head += b"\0" * ((-len(head)) % align)
    data = bytearray()
    for *_, offset, blob in tensors:
        if not blob:                      # a tensor whose data is left where its offset points
            continue
        end = offset + len(blob)
        if end > len(data):
            data.extend(b"\0" * (end - len(data)))
        data[offset:end] = blob
    return head + bytes(data)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A valid tiny Mamba-2 model, as (kvs, tensors) to serialize again."""
    p = tmp_path_factory.mktemp("fuzz") / "base.gguf"
    write_random_model(p, "mamba2", n_embd=16, n_layer=1, d_state=4, head_dim=8, n_vocab=40, seed=1)
    r = GGUFReader(p)
    kvs = []
    for f in r.fields.values():
        if f.name.startswith("GGUF."):                 # the header, as the reader shows it
            continue
        vtype = int(f.types[0])
        etype = int(f.types[1]) if vtype == ARR else None
        kvs.append((f.name, vtype, f.contents(), etype))
    data0 = r.data_offset
    tensors = [(t.name, [int(d) for d in t.shape], int(t.tensor_type), t.data_offset - data0,
                bytes(np.asarray(r.data[t.data_offset:t.data_offset + t.n_bytes])))
               for t in r.tensors]
    return _Base((p.read_bytes(), kvs, tensors))


class _Base(tuple):
    def __repr__(self):                   # hypothesis prints the arguments of a failing example
        return "<base model>"


OUTCOMES = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if OUTCOMES:                          # shown with -s: what the run exercised
        print(f"\nfuzz outcomes: {dict(OUTCOMES)}")


def _load_and_run(path):
    """Load; if that works, tokenize and evaluate a little. Only clean errors are allowed."""
    try:
        m = tinyggml.Model(str(path), n_threads=1)
    except ModelLoadError as e:
        assert str(path) in str(e), f"the error does not name the file: {e}"
        OUTCOMES["refused at load"] += 1
        return "refused"
    try:
        ids = m.tokenize("hello world, ROMEO! 123") or [0]
        m.eval(ids[: 4], 0)
        m.detokenize(ids)
    except ModelLoadError as e:          # the tokenizer is read on first use
        assert str(path) in str(e), f"the error does not name the file: {e}"
        OUTCOMES["refused at first use (tokenizer)"] += 1
        return "refused late"
    OUTCOMES["loaded and ran"] += 1
    return "loaded"


def test_base_round_trips(base, tmp_path):
    raw, kvs, tensors = base
    p = tmp_path / "again.gguf"
    p.write_bytes(serialize(kvs, tensors))
    assert _load_and_run(p) == "loaded"


_KEYS = ["general.architecture", "general.alignment", "mamba2.embedding_length", "mamba2.block_count",
         "mamba2.ssm.conv_kernel", "mamba2.ssm.inner_size", "mamba2.ssm.state_size",
         "mamba2.ssm.time_step_rank", "mamba2.ssm.group_count",
         "mamba2.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model", "tokenizer.ggml.tokens",
         "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.scores",
         "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]

_values = st.one_of(
    st.tuples(st.just(U32), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(I32), st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.just(U64), st.sampled_from([0, 1, 2**63, 2**64 - 1, 3, 16, 4096])),
    st.tuples(st.just(F32), st.floats(width=32, allow_nan=True)),
    st.tuples(st.just(BOOL), st.booleans()),
    st.tuples(st.just(STR), st.text(max_size=8)),
    st.tuples(st.just(ARR), st.lists(st.integers(0, 2**31), max_size=5)),
    st.tuples(st.just(ARR), st.lists(st.text(max_size=4), max_size=5)),
)

_mutation = st.one_of(
    st.tuples(st.just("kv value"), st.sampled_from(_KEYS), _values),
    st.tuples(st.just("kv drop"), st.sampled_from(_KEYS)),
    st.tuples(st.just("kv dup"), st.sampled_from(_KEYS)),
    st.tuples(st.just("tensor dims"), st.integers(0, 20),
              st.lists(st.sampled_from([0, 1, 2, 3, 7, 16, 32, 40, 64, 2**31, 2**62]), min_size=0, max_size=5)),
    st.tuples(st.just("tensor type"), st.integers(0, 20), st.integers(0, 45)),
    st.tuples(st.just("tensor offset"), st.integers(0, 20), st.sampled_from([0, 1, 31, 32, 255, 2**40, 2**64 - 32])),
    st.tuples(st.just("tensor drop"), st.integers(0, 20)),
    st.tuples(st.just("tensor dup"), st.integers(0, 20)),
    st.tuples(st.just("tensor name"), st.integers(0, 20), st.text(max_size=12)),
    st.tuples(st.just("counts"), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("version"), st.integers(0, 10)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
)


def _mutate(base, mutations):
    _, kvs, tensors = base
    kvs, tensors = list(kvs), list(tensors)
    extra = {}
    for m in mutations:
        kind = m[0]
        if kind.startswith("kv"):
            idx = [i for i, kv in enumerate(kvs) if kv[0] == m[1]]
            if kind == "kv value":
                (vtype, v) = m[2]
                etype = (STR if v and isinstance(v[0], str) else U32) if vtype == ARR else None
                new = (m[1], vtype, v, etype)
                if idx:
                    kvs[idx[0]] = new
                else:
                    kvs.append(new)
            elif kind == "kv drop" and idx:
                del kvs[idx[0]]
            elif kind == "kv dup" and idx:
                kvs.append(kvs[idx[0]])
        elif kind.startswith("tensor") and tensors:
            i = m[1] % len(tensors)
            name, dims, ttype, off, blob = tensors[i]
            if kind == "tensor dims":
                tensors[i] = (name, m[2], ttype, off, blob)
            elif kind == "tensor type":
                tensors[i] = (name, dims, m[2], off, blob)
            elif kind == "tensor offset":
                tensors[i] = (name, dims, ttype, m[2], b"")
            elif kind == "tensor drop":
                del tensors[i]
            elif kind == "tensor dup":
                tensors.append(tensors[i])
            elif kind == "tensor name":
                tensors[i] = (m[2], dims, ttype, off, blob)
        elif kind == "counts":
            extra.update(n_tensors=m[1], n_kv=m[2])
        elif kind == "version":
            extra["version"] = m[1]
    raw = serialize(kvs, tensors, **extra)
    for m in mutations:
        if m[0] == "truncate":
            raw = raw[:int(len(raw) * m[1])]
    return raw


@FUZZ
@given(mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_structured_gguf_fuzz(base, tmp_path_factory, mutations):
    p = tmp_path_factory.mktemp("s", numbered=True) / "fuzzed.gguf"
    p.write_bytes(_mutate(base, mutations))
    _load_and_run(p)


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_byte_mutation_fuzz(base, tmp_path_factory, flips, cut):
    raw = bytearray(base[0])
    header = 2048 if len(raw) > 2048 else len(raw)     # most flips where the structure is
    for where, byte in flips:
        raw[int(where * header)] = byte
    if cut is not None:
        raw = raw[:int(len(raw) * cut)]
    p = tmp_path_factory.mktemp("b", numbered=True) / "flipped.gguf"
    p.write_bytes(bytes(raw))
    _load_and_run(p)


@pytest.fixture(scope="module")
def blob_model(base, tmp_path_factory):
    p = tmp_path_factory.mktemp("blob") / "m.gguf"
    p.write_bytes(base[0])
    m = tinyggml.Model(str(p), n_threads=1)
    m.eval([1, 2, 3], 0)
    return m, m.state_save(0)


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.floats(0, 1)), rechecksum=st.booleans())
def test_state_blob_fuzz(blob_model, flips, cut, rechecksum):
    """Damaged blobs, with the checksum recomputed or not (a crafted file passes it): refused
    with a TinyGGMLError, or loaded; the target sequence untouched when refused."""
    import hashlib
    m, blob = blob_model
    raw = bytearray(blob[:-32])
    for where, byte in flips:
        raw[int(where * min(len(raw), 256))] = byte     # the header and the first entry's lengths
    raw = bytes(raw) + (hashlib.sha256(bytes(raw)).digest() if rechecksum else blob[-32:])
    if cut is not None:
        raw = raw[:int(len(raw) * cut)]
    before = m.state_save(0)
    try:
        m.state_load(1, raw)
    except TinyGGMLError:
        assert m.state_save(0) == before
        OUTCOMES["blob refused"] += 1
        return
    m.eval([4], 1)
    OUTCOMES["blob loaded and ran"] += 1


FIXTURE_FILES = ["mamba2-tiny-g2-spm-q4_0.gguf", "mamba2-tiny-g2-spm-q8_0.gguf"]   # the smallest


@requires_fixtures
@FUZZ
@given(which=st.sampled_from(FIXTURE_FILES),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_fixture_byte_mutation_fuzz(tmp_path_factory, which, flips, cut):
    """Byte mutations of the shared fixtures (llama.cpp's converter and quantizer wrote them; an
    SPM tokenizer, Q4_0 / Q8_0 blocks): the header and tokenizer get most of the flips."""
    raw = bytearray((FIXTURES / "models" / which).read_bytes())
    header = min(len(raw), 200_000)
    for where, byte in flips:
        raw[int(where * header)] = byte
    if cut is not None:
        raw = raw[:int(len(raw) * cut)]
    p = tmp_path_factory.mktemp("f", numbered=True) / which
    p.write_bytes(bytes(raw))
    _load_and_run(p)


def test_overlap_hidden_behind_an_empty_tensor_is_found(base, tmp_path):
    """A=[0, n), an empty tensor inside A, then C inside A too: neighbours alone would miss it."""
    _, kvs, tensors = base
    tensors = list(tensors)
    big = max(range(len(tensors)), key=lambda i: len(tensors[i][4]))
    name, dims, ttype, off, blob = tensors[big]
    assert len(blob) >= 256
    j = (big + 1) % len(tensors)
    tensors[j] = (tensors[j][0], tensors[j][1], tensors[j][2], off + 128, tensors[j][4])
    tensors.append(("empty", [0], 0, off + 64, b""))
    p = tmp_path / "hidden-overlap.gguf"
    p.write_bytes(serialize(kvs, tensors))
    with pytest.raises(ModelLoadError, match="overlap"):
        tinyggml.Model(str(p))
