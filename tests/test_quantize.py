"""The quantizer (tinyggml.tools.quantize, tinyggml.tools.kquants) against llama-quantize and ggml.

With ../shared/fixtures: llama-quantize's q8_0 / q4_0 files are reproduced byte for byte
(keys, key order, tensor order, types, data) from the f32 files. Without them:
- every type: error of random rows through gguf-py's dequantizer, bounded by the type's precision;
- Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/F16/BF16: bit-exact with gguf-py's quantizers (ggml's reference ones);
- K-quants: bit-exact with ggml's reference C quantizers (quantize_row_q*_K_ref, ggml-quants.c
  at llama.cpp 01243c5, built with gcc -O2 -ffp-contract=off; the SHA-256 of its output on a
  seeded input is recorded below), and no worse than a plain per-sub-block min/max quantizer;
- files: which tensors get which type (llama-quantize's rules), metadata, order, F16/BF16
  sources, requantization, threads, progress, and the errors (no partial file is left).
"""
import hashlib
import os

import numpy as np
import pytest
import gguf
from gguf import GGMLQuantizationType as Q

from tinyggml.tools import quantize as qz
from tinyggml.errors import TinyGGMLError
from tinyggml.tools.quantize import QTYPES, quantize_file, quantize_tensor, target_type, llama_order
from tinyggml.tools.testing import write_random_model
from conftest import FIXTURES, requires_fixtures

MODELS = FIXTURES / "models"
KQUANTS = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
GGUF_PY = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16", "bf16"]   # gguf-py has a quantizer

# relative RMSE (error RMS / value RMS) of standard normal rows; measured values in comments
RMSE_BOUND = {
    "f32": 0.0, "f16": 3e-4, "bf16": 2.2e-3,     # 0.00019, 0.0018
    "q8_0": 0.0065,                              # 0.0055
    "q6_k": 0.020,                               # 0.0177
    "q5_k": 0.040, "q5_1": 0.042, "q5_0": 0.050,  # 0.036, 0.038, 0.043
    "q4_k": 0.080, "q4_1": 0.088, "q4_0": 0.095,  # 0.071, 0.078, 0.086
    "q3_k": 0.170,                               # 0.151
    "q2_k": 0.330,                               # 0.297
}

# ggml's quantize_row_q*_K_ref on golden_input(), SHA-256 of the output bytes
GGML_REF_SHA256 = {
    "q2_k": "8e045de4cd5699b174f46d779c729d562c8a7f9ca2f3687210b06720827bd606",
    "q3_k": "59ccec199c4199d0f1b87670327d0f7a01db7d691fe275c88f99ccb4eed0ad8c",
    "q4_k": "b3ea081faaa19b07460211fb7028fed7c402040ee329002f036ad2d7af84bb92",
    "q5_k": "5cb52574147204489162f104e06675f70d28c4dc951c5f11285ef07547d39a9e",
    "q6_k": "626b3132d7723bace8da722675ba22f7f9d577faafda617a751b4ddb0507a291",
}


def golden_input():
    """64 super-blocks: normal, shifted uniform, heavy-tailed, sparse, tiny, zero, constant and
    piecewise-constant rows, and one partly zero row."""
    rng = np.random.default_rng(20240601)
    x = np.concatenate([rng.standard_normal((24, 256)), rng.uniform(-1, 1, (8, 256)) + 0.5,
                        rng.standard_t(2, (8, 256)),
                        rng.standard_normal((8, 256)) * (rng.random((8, 256)) < 0.1),
                        rng.standard_normal((8, 256)) * 1e-4,
                        np.zeros((2, 256)), np.full((2, 256), 0.75), np.full((2, 256), -3.0),
                        np.repeat(rng.standard_normal((2, 16)), 16, axis=1)]).astype(np.float32)
    x[-10, :48] = 0
    return x


def rel_rmse(y, x):
    return float(np.sqrt(np.mean((y - x) ** 2)) / np.sqrt(np.mean(x ** 2)))


def dequant(data, qtype):
    return gguf.quants.dequantize(data, QTYPES[qtype][0])


# ---- one tensor ------------------------------------------------------------------------------

@pytest.mark.parametrize("ne0,n_rows", [(256, 7), (512, 3)])
@pytest.mark.parametrize("qtype", list(QTYPES))
def test_error_within_type_precision(qtype, ne0, n_rows):
    x = np.random.default_rng(ne0 + n_rows).standard_normal((n_rows, ne0)).astype(np.float32)
    q = quantize_tensor(x, qtype)
    block, size = gguf.GGML_QUANT_SIZES[QTYPES[qtype][0]]
    assert q.dtype == np.uint8 and q.shape == (n_rows, ne0 // block * size)
    y = dequant(q, qtype)
    assert y.shape == x.shape
    assert rel_rmse(y, x) <= RMSE_BOUND[qtype]


@pytest.mark.parametrize("qtype", GGUF_PY)
def test_bit_exact_with_gguf_py(qtype):
    x = np.concatenate([golden_input().reshape(-1, 512), np.random.default_rng(3).standard_normal(
        (5, 512)) * 3]).astype(np.float32)
    x[0, :64] = 0.5                      # ties: equal |max| with both signs, exact halves
    x[0, 64:96] = np.tile([1.0, -1.0], 16)
    want = gguf.quants.quantize(x, QTYPES[qtype][0]).view(np.uint8)
    assert np.array_equal(quantize_tensor(x, qtype), want.reshape(len(x), -1))


@pytest.mark.parametrize("qtype", KQUANTS)
def test_kquants_bit_exact_with_ggml_reference(qtype):
    out = quantize_tensor(golden_input(), qtype)
    assert hashlib.sha256(out.tobytes()).hexdigest() == GGML_REF_SHA256[qtype]


def minmax_reference(x, qtype):
    """Plain K-quant-shaped quantizer with float scales: per sub-block, asymmetric min/max
    (Q2_K/Q4_K/Q5_K, min <= 0 as in ggml) or symmetric from the largest |x| (Q3_K/Q6_K)."""
    sub, nmax, asym = {"q2_k": (16, 3, True), "q3_k": (16, 4, False), "q4_k": (32, 15, True),
                       "q5_k": (32, 31, True), "q6_k": (16, 32, False)}[qtype]
    xs = x.reshape(-1, sub).astype(np.float64)
    if asym:
        lo, hi = np.minimum(xs.min(1, keepdims=True), 0), xs.max(1, keepdims=True)
        d = np.where(hi > lo, (hi - lo) / nmax, 1)
        y = np.clip(np.round((xs - lo) / d), 0, nmax) * d + lo
    else:
        m = np.take_along_axis(xs, np.abs(xs).argmax(1)[:, None], 1)
        d = np.where(m != 0, m / -nmax, 1)
        y = np.clip(np.round(xs / d), -nmax, nmax - 1) * d
    return y.reshape(x.shape)


@pytest.mark.parametrize("dist", ["normal", "uniform"])
@pytest.mark.parametrize("qtype", KQUANTS)
def test_kquants_no_worse_than_minmax(qtype, dist):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((65, 256)) if dist == "normal"
         else rng.uniform(-1, 1, (65, 256))).astype(np.float32)
    ours = rel_rmse(dequant(quantize_tensor(x, qtype), qtype), x)
    plain = rel_rmse(minmax_reference(x, qtype), x)
    assert ours <= plain          # measured ratios 0.84..0.98 (the scale searches pay off)


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16", "bf16"])
def test_requantizing_dequantized_data_gives_the_same_bytes(qtype):
    """quantize(dequantize(q)) == q. This holds for the 32-block types; the K-quants' scale
    searches are not idempotent (about 1-3% of Q2_K/Q4_K rows and more for Q3/5/6_K change)."""
    x = np.random.default_rng(9).standard_normal((33, 256)).astype(np.float32)
    q = quantize_tensor(x, qtype)
    assert np.array_equal(quantize_tensor(dequant(q, qtype), qtype), q)


def test_quantize_tensor_arguments():
    x = np.random.default_rng(0).standard_normal((2, 3, 64)).astype(np.float32)
    assert np.array_equal(quantize_tensor(x, Q.Q8_0), quantize_tensor(x, "Q8_0"))
    assert quantize_tensor(x, "q8_0").shape == (2, 3, 68)
    assert np.array_equal(quantize_tensor(x.astype(np.float64), "f32").view(np.float32), x)
    with pytest.raises(TinyGGMLError, match="rows of 64 values cannot be stored as Q4_K"):
        quantize_tensor(x, "q4_k")
    with pytest.raises(TinyGGMLError, match="unknown quantization type 'q4_k_m'"):
        quantize_tensor(x, "q4_k_m")


# ---- type rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,shape,base,tied,want", [
    ("blk.0.ssm_in.weight", [256, 1024], Q.Q4_0, False, (Q.Q4_0, False)),
    ("blk.0.ssm_conv1d.weight", [4, 512], Q.Q4_0, False, (Q.F32, False)),
    ("blk.0.ssm_norm.weight", [128, 2], Q.Q4_0, False, (Q.F32, False)),
    ("blk.0.ssm_a", [16, 512], Q.Q4_0, False, (Q.F32, False)),
    ("blk.0.ssm_dt.bias", [512], Q.Q8_0, False, (Q.F32, False)),
    ("blk.0.ssm_x.weight", [512, 40], Q.Q4_K, False, (Q.Q4_K, False)),
    ("output.weight", [128, 4000], Q.Q4_0, False, (Q.Q8_0, True)),   # Q6_K wanted, ne0 % 256
    ("output.weight", [128, 4000], Q.Q4_K, False, (Q.Q8_0, False)),  # ne0 % 256: Q8_0 wanted
    ("output.weight", [48, 4000], Q.Q4_0, False, (Q.F16, True)),     # ne0 % 32: Q8_0 wanted
    ("output.weight", [768, 4000], Q.Q4_0, False, (Q.Q6_K, False)),
    ("output.weight", [768, 4000], Q.Q8_0, False, (Q.Q8_0, False)),
    ("token_embd.weight", [768, 4000], Q.Q4_K, False, (Q.Q4_K, False)),  # untied: base type
    ("token_embd.weight", [768, 4000], Q.Q4_K, True, (Q.Q6_K, False)),   # tied: the output's
    ("token_embd.weight", [64, 4000], Q.Q5_K, True, (Q.Q8_0, False)),
    ("blk.0.ssm_in.weight", [64, 328], Q.Q4_K, False, (Q.Q5_0, True)),
    ("blk.0.ssm_in.weight", [64, 328], Q.Q5_K, False, (Q.Q5_1, True)),
    ("blk.0.ssm_in.weight", [64, 328], Q.Q6_K, False, (Q.Q8_0, True)),
    ("blk.0.ssm_in.weight", [64, 328], Q.Q2_K, False, (Q.Q4_0, True)),
    ("blk.0.ssm_in.weight", [64, 328], Q.Q3_K, False, (Q.Q4_0, True)),
    ("blk.0.ssm_dt.weight", [48, 768], Q.Q4_K, False, (Q.F16, True)),
    ("blk.0.ssm_dt.weight", [48, 768], Q.Q8_0, False, (Q.F16, True)),
    ("blk.0.ssm_dt.weight", [48, 768], Q.BF16, False, (Q.BF16, False)),
])
def test_target_type(name, shape, base, tied, want):
    assert target_type(name, shape, Q.F32, base, tied) == want


def test_llama_order():
    names = ["token_embd.weight", "blk.10.ssm_a", "blk.2.ssm_in.weight", "output_norm.weight",
             "blk.2.attn_norm.weight", "output.weight", "blk.10.attn_norm.weight"]
    assert llama_order(names) == ["output.weight", "output_norm.weight", "token_embd.weight",
                                  "blk.2.attn_norm.weight", "blk.2.ssm_in.weight",
                                  "blk.10.attn_norm.weight", "blk.10.ssm_a"]


# ---- files -----------------------------------------------------------------------------------

def read(path):
    r = gguf.GGUFReader(path)
    return r, {t.name: t for t in r.tensors}


@requires_fixtures
@pytest.mark.parametrize("src,qtype,ref", [
    ("mamba2-tiny-g2-spm-f32.gguf", "q8_0", "mamba2-tiny-g2-spm-q8_0.gguf"),
    ("mamba2-tiny-g2-spm-f32.gguf", "q4_0", "mamba2-tiny-g2-spm-q4_0.gguf"),
    ("mamba2-tiny-f32.gguf", "q8_0", "mamba2-tiny-q8_0.gguf"),
])
def test_files_identical_to_llama_quantize(src, qtype, ref, tmp_path):
    out = tmp_path / ref
    summary = quantize_file(MODELS / src, out, qtype, progress=False)
    if out.read_bytes() != (MODELS / ref).read_bytes():      # say what differs
        r, t = read(out)
        r_ref, t_ref = read(MODELS / ref)
        assert list(r.fields) == list(r_ref.fields)
        assert list(t) == list(t_ref)
        for name, tr in t_ref.items():
            assert (t[name].tensor_type, list(t[name].shape)) == (tr.tensor_type, list(tr.shape))
            assert np.array_equal(np.asarray(t[name].data), np.asarray(tr.data)), name
        pytest.fail("same keys and tensors, yet the files differ")
    assert summary["file_type"] == QTYPES[qtype][1].name
    assert summary["dst_bytes"] == (MODELS / ref).stat().st_size


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_k", "q6_k", "f16"])
def test_random_mamba1_file(qtype, tmp_path):
    """Tied Mamba-1, n_embd 256 (token_embd takes the output's type), dt_rank 16 (ssm_dt falls
    back to F16); every tensor decodes to its source within the type's precision."""
    src = tmp_path / "m1.gguf"
    write_random_model(src, "mamba", n_embd=256, n_layer=2, d_state=16, n_vocab=300, seed=1)
    out = tmp_path / f"m1-{qtype}.gguf"
    summary = quantize_file(src, out, qtype, progress=False)
    base, ftype = QTYPES[qtype]
    r_src, t_src = read(src)
    r, t = read(out)
    assert r.fields["general.file_type"].contents() == int(ftype)
    assert list(r.fields)[-2:] == ["general.quantization_version", "general.file_type"]
    moved = ("general.quantization_version", "general.file_type")
    assert [k for k in r.fields if k not in moved] == [k for k in r_src.fields if k not in moved]
    assert list(t) == llama_order(t_src) == list(summary["tensors"])
    quantized = base not in (Q.F32, Q.F16, Q.BF16)
    want = {"token_embd.weight": (Q.Q8_0 if base == Q.Q8_0 else Q.Q6_K) if quantized else base}
    for il in range(2):
        want.update({f"blk.{il}.ssm_in.weight": base, f"blk.{il}.ssm_x.weight": base,
                     f"blk.{il}.ssm_out.weight": base,
                     f"blk.{il}.ssm_dt.weight": Q.F16 if quantized else base})
    for name, ts in t_src.items():
        assert t[name].tensor_type == want.get(name, Q.F32), name
        assert list(t[name].shape) == list(ts.shape)
        y = gguf.quants.dequantize(np.asarray(t[name].data), t[name].tensor_type)
        x = np.asarray(ts.data)
        bound = RMSE_BOUND[gguf.GGMLQuantizationType(t[name].tensor_type).name.lower()]
        assert rel_rmse(y, x) <= 1.1 * bound, name
    assert summary["tensors"]["blk.0.ssm_dt.weight"]["fallback"] == quantized


def test_random_mamba2_untied_output(tmp_path):
    src = tmp_path / "m2.gguf"
    write_random_model(src, "mamba2", n_embd=256, n_layer=1, d_state=16, n_vocab=300,
                       head_dim=64, tied=False, seed=2)
    types = {n: v["type"] for n, v in
             quantize_file(src, tmp_path / "o.gguf", "q4_k", progress=False)["tensors"].items()}
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"
    assert types["blk.0.ssm_in.weight"] == "Q4_K" and types["blk.0.ssm_out.weight"] == "Q4_K"
    assert types["blk.0.ssm_norm.weight"] == types["blk.0.ssm_a"] == "F32"


@pytest.mark.parametrize("wtype", ["f16", "bf16"])
def test_f16_and_bf16_sources(wtype, tmp_path):
    """The source is decoded exactly, then quantized: same bytes as quantizing its values."""
    src = tmp_path / "m.gguf"
    write_random_model(src, "mamba2", n_embd=64, n_layer=1, d_state=16, n_vocab=100,
                       wtype="f16", seed=3)
    if wtype == "bf16":
        quantize_file(src, tmp_path / "bf16.gguf", "bf16", progress=False)
        src = tmp_path / "bf16.gguf"
    out = tmp_path / "q.gguf"
    quantize_file(src, out, "q8_0", progress=False)
    _, t_src = read(src)
    _, t = read(out)
    w = t_src["blk.0.ssm_in.weight"]
    assert w.tensor_type == (Q.F16 if wtype == "f16" else Q.BF16)
    x = gguf.quants.dequantize(np.asarray(w.data), w.tensor_type)
    assert np.array_equal(np.asarray(t["blk.0.ssm_in.weight"].data), quantize_tensor(x, "q8_0"))


def test_requantize_needs_permission(tmp_path):
    src = tmp_path / "m.gguf"
    write_random_model(src, "mamba2", n_embd=64, n_layer=1, d_state=16, n_vocab=100, seed=4)
    q8 = tmp_path / "q8.gguf"
    quantize_file(src, q8, "q8_0", progress=False)
    out = tmp_path / "q4.gguf"
    with pytest.raises(TinyGGMLError, match="q8.gguf: tensor .* already quantized .Q8_0.*"
                                            "pass --allow-requantize$"):
        quantize_file(q8, out, "q4_0", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["m.gguf", "q8.gguf"]
    summary = quantize_file(q8, out, "q4_0", progress=False, allow_requantize=True)
    assert summary["tensors"]["blk.0.ssm_in.weight"] == {
        "type": "Q4_0", "from": "Q8_0", "shape": [64, 290], "bytes": 290 * 2 * 18,
        "fallback": False}
    assert summary["tensors"]["token_embd.weight"]["type"] == "Q8_0"   # tied, ne0 64: copied
    # the same type again is a plain copy, no permission needed
    quantize_file(q8, tmp_path / "again.gguf", "q8_0", progress=False)
    assert (tmp_path / "again.gguf").read_bytes() == q8.read_bytes()


def test_threads_give_the_same_file(tmp_path, monkeypatch):
    monkeypatch.setattr(qz, "CHUNK_VALUES", 8192)      # row chunks of 32 rows
    src = tmp_path / "m.gguf"
    write_random_model(src, "mamba", n_embd=256, n_layer=1, d_state=16, n_vocab=50, seed=5)
    quantize_file(src, tmp_path / "a.gguf", "q4_k", n_threads=1, progress=False)
    quantize_file(src, tmp_path / "b.gguf", "q4_k", n_threads=3, progress=False)
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


def test_progress_on_stderr_only_when_asked(tmp_path, capsys):
    src = tmp_path / "m.gguf"
    write_random_model(src, "mamba2", n_embd=64, n_layer=1, d_state=16, n_vocab=100, seed=6)
    quantize_file(src, tmp_path / "a.gguf", "q8_0", progress=False, log=None)
    assert capsys.readouterr() == ("", "")
    quantize_file(src, tmp_path / "b.gguf", "q8_0", progress=True, log=None)
    out, err = capsys.readouterr()
    assert out == "" and "quantizing" in err


# ---- errors ----------------------------------------------------------------------------------

def test_bad_qtype_and_unreadable_source(tmp_path):
    src = tmp_path / "m.gguf"
    write_random_model(src, "mamba2", n_embd=64, n_layer=1, d_state=16, n_vocab=100, seed=7)
    with pytest.raises(TinyGGMLError, match=r"unknown quantization type 'q4_k_x' \(choose from "
                                            r"Q4_0, Q4_1, .*Q4_K_M, .*F32, COPY\)"):
        quantize_file(src, tmp_path / "o.gguf", "q4_k_x", progress=False)
    with pytest.raises(TinyGGMLError, match="no such file"):
        quantize_file(tmp_path / "missing.gguf", tmp_path / "o.gguf", "q8_0", progress=False)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(TinyGGMLError, match="not a GGUF file"):
        quantize_file(tmp_path / "junk.gguf", tmp_path / "o.gguf", "q8_0", progress=False)
    with pytest.raises(TinyGGMLError, match="would overwrite the input"):
        quantize_file(src, src, "q8_0", progress=False)
    with pytest.raises(TinyGGMLError, match="junk.gguf is not a folder"):
        quantize_file(src, tmp_path / "junk.gguf" / "o.gguf", "q8_0", progress=False)
    with pytest.raises(TinyGGMLError, match="folder .*missing does not exist"):
        quantize_file(src, tmp_path / "missing" / "o.gguf", "q8_0", progress=False)
    with pytest.raises(TinyGGMLError, match="cannot write .File name too long"):
        quantize_file(src, tmp_path / ("x" * 250 + ".gguf"), "q8_0", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["junk.gguf", "m.gguf"]


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_no_partial_file_after_an_error(exc, tmp_path, monkeypatch):
    src = tmp_path / "m.gguf"
    write_random_model(src, "mamba2", n_embd=64, n_layer=2, d_state=16, n_vocab=100, seed=8)
    dst = tmp_path / "out.gguf"
    dst.write_bytes(b"previous")
    calls = []

    def failing(data, qtype):
        calls.append(qtype)
        if len(calls) == 3:                # after a few tensors were written
            raise exc
        return quantize_tensor(data, qtype)

    monkeypatch.setattr(qz, "quantize_tensor", failing)
    with pytest.raises(type(exc)):
        quantize_file(src, dst, "q4_0", n_threads=1, progress=False)
    assert len(calls) == 3
    assert sorted(os.listdir(tmp_path)) == ["m.gguf", "out.gguf"]
    assert dst.read_bytes() == b"previous"
