"""tinyggml's GGUF reader against the gguf package's: the same fields (order, types, contents)
and the same tensors (offsets, shapes, dtypes, bytes) on the fixture files and on files with
every value type; zero-copy views of the file; a ValueError naming the problem for damaged
files (never struct.error or IndexError from inside)."""
import struct

import gguf
import numpy as np
import pytest

from conftest import FIXTURES, requires_fixtures
from tinyggml.gguf_reader import GGUFReader
from tinyggml.tools.testing import write_random_model

VT = gguf.GGUFValueType


def assert_same(path):
    ours, ref = GGUFReader(path), gguf.GGUFReader(path)
    assert list(ours.fields) == list(ref.fields)
    for key, f in ref.fields.items():
        g = ours.fields[key]
        if f.types == [VT.ARRAY]:    # an empty array: gguf drops its element type, we keep it
            assert g.types[0] == VT.ARRAY and len(g.types) == 2, key
        else:
            assert [int(t) for t in g.types] == [int(t) for t in f.types], key
        a, b = g.contents(), f.contents()
        assert type(a) is type(b) and a == b, key
        if isinstance(a, list):
            assert [type(x) for x in a] == [type(x) for x in b], key
    assert ours.alignment == ref.alignment and ours.data_offset == ref.data_offset
    assert len(ours.tensors) == len(ref.tensors)
    for t, r in zip(ours.tensors, ref.tensors):
        assert (t.name, int(t.tensor_type), t.n_elements, t.n_bytes, t.data_offset) == \
               (r.name, int(r.tensor_type), r.n_elements, r.n_bytes, r.data_offset)
        assert t.shape.tolist() == r.shape.tolist()
        assert t.data.dtype == r.data.dtype and t.data.shape == r.data.shape, t.name
        np.testing.assert_array_equal(t.data.view(np.uint8), np.asarray(r.data).view(np.uint8))
        assert np.shares_memory(t.data, ours.data)          # a view of the mapping, no copy
    return ours


# one of each kind (the gguf reader takes seconds on each 50k vocabulary): SPM and BPE
# vocabularies, Q4_0 / Q8_0 / F32 weights, Falcon-Mamba (Mamba-1) / Mamba-2
FIXTURE_FILES = ["tokenizers/ggml-vocab-llama-spm.gguf", "models/mamba2-tiny-g2-spm-q4_0.gguf",
                 "models/mamba2-tiny-g2-spm-q8_0.gguf", "models/falcon-mamba-tiny-f32.gguf"]


@requires_fixtures
@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture_files_read_like_gguf(name):
    assert_same(FIXTURES / name)


def every_value_type(path, alignment=None):
    w = gguf.GGUFWriter(str(path), "mamba2")
    if alignment:
        w.data_alignment = alignment
        w.add_uint32("general.alignment", alignment)
    scalars = [(VT.UINT8, 200), (VT.INT8, -100), (VT.UINT16, 60000), (VT.INT16, -30000),
               (VT.UINT32, 4_000_000_000), (VT.INT32, -2_000_000_000), (VT.FLOAT32, 1.5),
               (VT.BOOL, True), (VT.UINT64, 2**63 + 5), (VT.INT64, -2**62), (VT.FLOAT64, -2.25)]
    for vt, v in scalars:
        w.add_key_value(f"t.scalar.{vt.name}", v, vt)
        w.add_key_value(f"t.array.{vt.name}", [v, v, v], VT.ARRAY, vt)
    w.add_key_value("t.string", "héllo ▁ wörld 🙂", VT.STRING)
    w.add_key_value("t.empty_string", "", VT.STRING)
    w.add_key_value("t.strings", ["a", "", "ü▁", "🙂" * 40], VT.ARRAY, VT.STRING)
    rng = np.random.default_rng(0)
    w.add_tensor("f32", rng.standard_normal((3, 5)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((7,)).astype(np.float16))
    w.add_tensor("i32", np.arange(6, dtype=np.int32).reshape(2, 3))
    q = rng.integers(0, 256, (4, 2 * 18), dtype=np.uint8)          # 4 rows of 64 Q4_0 values
    w.add_tensor("q4_0", q, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("alignment", [None, 64])
def test_every_value_type(tmp_path, alignment):
    p = tmp_path / "all.gguf"
    every_value_type(p, alignment)
    r = assert_same(p)
    assert r.fields["t.string"].contents() == "héllo ▁ wörld 🙂"
    assert r.fields["t.array.UINT64"].contents() == [2**63 + 5] * 3
    assert [t.name for t in r.tensors] == ["f32", "f16", "i32", "q4_0"]
    assert r.tensors[3].data.shape == (4, 36) and r.tensors[3].data.dtype == np.uint8
    assert r.data_offset % (alignment or 32) == 0


def test_random_models(tmp_path):
    for arch in ("mamba", "mamba2"):
        p = tmp_path / f"{arch}.gguf"
        write_random_model(p, arch=arch, n_embd=32, n_layer=2, d_state=8, head_dim=16, n_vocab=64)
        assert_same(p)


# ---- damaged files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    p = tmp_path_factory.mktemp("rd") / "all.gguf"
    every_value_type(p)
    return p.read_bytes()


def read_error(tmp_path, data: bytes) -> str:
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    with pytest.raises(ValueError) as e:
        GGUFReader(p)
    return str(e.value)


def data_offset_of(tmp_path, data):
    p = tmp_path / "ok.gguf"
    p.write_bytes(data)
    return GGUFReader(p).data_offset


def test_every_truncation_of_the_metadata(tmp_path, sample):
    end = data_offset_of(tmp_path, sample) - 32     # the tables end in the last 32
    for n in list(range(0, 64)) + list(range(64, end, 7)):
        msg = read_error(tmp_path, sample[:n])
        assert "file ends inside" in msg or "not a GGUF" in msg, (n, msg)


def test_truncated_tensor_data_has_no_view(tmp_path, sample):
    p = tmp_path / "t.gguf"
    full = tmp_path / "full.gguf"
    full.write_bytes(sample)
    last = GGUFReader(full).tensors[-1]
    p.write_bytes(sample[:last.data_offset + last.n_bytes - 1])   # one byte short
    r = GGUFReader(p)
    assert r.tensors[-1].data is None and r.tensors[0].data is not None


def test_header_errors(tmp_path, sample):
    assert "not a GGUF" in read_error(tmp_path, b"GGUX" + sample[4:])
    assert "big-endian" in read_error(tmp_path, sample[:4] + struct.pack(">I", 3) + sample[8:])
    assert "version 1 " in read_error(tmp_path, sample[:4] + struct.pack("<I", 1) + sample[8:])
    # absurd counts fail at once, not after looping over the file
    assert "key and tensor tables" in read_error(tmp_path, sample[:16] + struct.pack("<Q", 2**60) + sample[24:])
    assert "key and tensor tables" in read_error(tmp_path, sample[:8] + struct.pack("<Q", 2**58) + sample[16:])


def first_key_type_offset(data):
    klen = struct.unpack_from("<Q", data, 24)[0]
    return 24 + 8 + klen


def test_unknown_value_type(tmp_path, sample):
    off = first_key_type_offset(sample)
    msg = read_error(tmp_path, sample[:off] + struct.pack("<I", 99) + sample[off + 4:])
    assert "unknown value type 99" in msg


def test_unknown_tensor_type_and_duplicates(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "mamba2")
    w.add_tensor("tensor_xyz", np.zeros(8, np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    data = (tmp_path / "x.gguf").read_bytes()
    # the tensor info: name (length, bytes), n_dims, dims, type, offset
    i = data.index(struct.pack("<Q", 10) + b"tensor_xyz") + 8 + 9
    type_at = i + 1 + 4 + 8
    assert struct.unpack_from("<I", data, type_at)[0] == 0
    assert "unknown tensor type 77" in read_error(tmp_path, data[:type_at] + struct.pack("<I", 77) + data[type_at + 4:])
    nd_at = i + 1
    assert "5 dimensions" in read_error(tmp_path, data[:nd_at] + struct.pack("<I", 5) + data[nd_at + 4:])


def test_duplicate_key(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "d.gguf"), "mamba2")
    w.add_uint32("k.a", 1)
    w.add_uint32("k.b", 2)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    data = (tmp_path / "d.gguf").read_bytes().replace(b"k.b", b"k.a")
    assert "duplicate key 'k.a'" in read_error(tmp_path, data)


def test_empty_array_and_nested_array(tmp_path):
    # the gguf writer refuses both; files may still hold them (the format allows it)
    def kv(key, vtype, payload):
        k = key.encode()
        return struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype) + payload
    arr = lambda et, items: struct.pack("<IQ", et, len(items)) + b"".join(items)
    kvs = [kv("general.architecture", VT.STRING, struct.pack("<Q", 6) + b"mamba2"),
           kv("t.empty", VT.ARRAY, arr(VT.INT32, [])),
           kv("t.nested", VT.ARRAY, arr(VT.ARRAY, [arr(VT.UINT16, [struct.pack("<H", 1), struct.pack("<H", 2)]),
                                                   arr(VT.UINT16, [struct.pack("<H", 3)])])),
           kv("t.nested_strings", VT.ARRAY, arr(VT.ARRAY, [arr(VT.STRING, [struct.pack("<Q", 1) + b"x"])]))]
    p = tmp_path / "raw.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))
    r = assert_same(p)
    assert r.fields["t.empty"].contents() == []
    assert r.fields["t.nested"].contents() == [1, 2, 3]
    assert r.fields["t.nested_strings"].contents() == ["x"]


def test_string_arrays_walked_and_decoded_in_c(tmp_path):
    """_strings.pyx: lengths past the end (up to 2^64 - 1) are refused at parse time; invalid
    UTF-8 is found when the strings are read, as a UnicodeDecodeError for the caller to name."""
    def raw_file(items: list[bytes]) -> bytes:
        k = b"t.strings"
        payload = struct.pack("<IQ", VT.STRING, len(items)) + b"".join(items)
        kv = struct.pack("<Q", len(k)) + k + struct.pack("<I", VT.ARRAY) + payload
        return b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv
    s = lambda b: struct.pack("<Q", len(b)) + b                      # noqa: E731
    ok = [s(b"x" * k) for k in range(40)] + [s("▁ü🙂".encode()), s(b"")]
    p = tmp_path / "s.gguf"
    p.write_bytes(raw_file(ok))
    assert GGUFReader(p).fields["t.strings"].contents() == ["x" * k for k in range(40)] + ["▁ü🙂", ""]
    for bad_len in (3, 2**32, 2**63, 2**64 - 1):
        msg = read_error(tmp_path, raw_file(ok[:3] + [struct.pack("<Q", bad_len) + b"ab"]))
        assert "file ends inside key 't.strings'" in msg, msg
    p.write_bytes(raw_file([s(b"ok"), s(b"\xff\xfe")]))
    f = GGUFReader(p).fields["t.strings"]
    with pytest.raises(UnicodeDecodeError):
        f.contents()
