"""The converter (tinyggml.tools.convert) against llama.cpp's convert_hf_to_gguf.py output.

With ../shared/fixtures: the four HF checkpoints convert to the fixture GGUFs (same keys and
values in the same order, same tensors, bit-exact data; the one exception is ~1% of the
Mamba-1 ssm_a values, 1 ulp apart: llama.cpp rounds torch's (MKL) exp, we round exp exactly).
Hybrids (granitehybrid, nemotron_h, falcon-h1, lfm2, qwen35), from the repository: the
checkpoints behind tests/fixtures/hybrid/<arch>-f32.gguf, rebuilt from hf-<arch>/ and that
file, convert to the same bytes as llama.cpp's f32 and f16 files; random checkpoints written
here run to the logits of a float64 numpy model written after transformers' code (multipliers
where it applies them).
Without the shared fixtures: small random checkpoints written here (the mistral
Mamba-Codestral layout, the transformers layout, state-spaces configs, shards, bf16), a
sentencepiece model trained here, and the error cases.
"""
import io
import json
import shutil
from hashlib import sha256

import numpy as np
import pytest
from gguf import GGUFReader, GGMLQuantizationType as Q
from safetensors.numpy import load_file, save_file

import tinyggml
from tinyggml.tools.convert import convert, gguf_name
from tinyggml.tools.convert_vocab import CHKTXT
from tinyggml.errors import TinyGGMLError
from conftest import FIXTURES, TESTS, requires_fixtures
from reference.hybrid_np import rope
from reference.mamba_np import mamba2_mixer, rmsnorm, silu

MODELS = ["mamba1-tiny", "mamba2-tiny", "mamba2-tiny-g2-spm", "falcon-mamba-tiny"]
NEOX = FIXTURES / "tokenizers" / "ggml-vocab-gpt-neox.gguf"
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = range(1, 7)


def read_gguf(path):
    r = GGUFReader(path)
    kv = {k: (f.types, f.contents()) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type, tuple(int(x) for x in t.shape), np.asarray(t.data))
               for t in r.tensors}
    return kv, tensors


def assert_same_gguf(ours, ref, ssm_a_ulps=0, same_order=True, skip_keys=()):
    """Keys (in order), values, tensor names (in order unless not same_order), types, shapes
    and data equal; ssm_a within `ssm_a_ulps` ulps."""
    if same_order and not skip_keys and ours.read_bytes() == ref.read_bytes():
        return      # (parsing 100k-string vocab arrays takes the gguf reader seconds)
    kv, t = read_gguf(ours)
    kv_ref, t_ref = read_gguf(ref)
    keys = [k for k in kv if k not in skip_keys]
    keys_ref = [k for k in kv_ref if k not in skip_keys]
    assert keys == keys_ref
    for k in keys:
        assert kv[k] == kv_ref[k], k
    assert (list(t) == list(t_ref)) if same_order else sorted(t) == sorted(t_ref)
    for name, (typ, shape, data) in t_ref.items():
        typ2, shape2, data2 = t[name]
        assert (typ2, shape2) == (typ, shape), name
        if name.endswith("ssm_a") and ssm_a_ulps:
            ulps = np.abs(data2.view(np.int32).astype(np.int64) - data.view(np.int32))
            assert ulps.max() <= ssm_a_ulps and np.mean(ulps > 0) < 0.02, name
        else:
            assert np.array_equal(data2.view(np.uint8), data.view(np.uint8)), name


def convert_fixture(name, outtype, tmp_path, **kw):
    vocab = None if "spm" in name else NEOX
    out = tmp_path / f"{name}-{outtype}.gguf"
    convert(FIXTURES / "hf" / name, out, outtype, vocab_from=vocab, progress=False,
            name=f"tinyggml-ref-{name}", **kw)
    return out


# ---- against llama.cpp's converter (fixtures) -----------------------------------------------

@requires_fixtures
@pytest.mark.parametrize("name", MODELS)
def test_f32_matches_llamacpp(name, tmp_path):
    out = convert_fixture(name, "f32", tmp_path)
    ref = FIXTURES / "models" / f"{name}-f32.gguf"
    assert_same_gguf(out, ref, ssm_a_ulps=1)
    if name.startswith("mamba2"):   # one scalar A per head: every exp rounds alike
        assert out.read_bytes() == ref.read_bytes()


@requires_fixtures
@pytest.mark.parametrize("name", ["mamba1-tiny", "mamba2-tiny"])
def test_f16_matches_llamacpp(name, tmp_path):
    out = convert_fixture(name, "f16", tmp_path)
    assert_same_gguf(out, FIXTURES / "models" / f"{name}-f16.gguf", ssm_a_ulps=1)


@requires_fixtures
@pytest.mark.parametrize("name", ["mamba2-tiny", "mamba2-tiny-g2-spm"])
def test_q8_0_data_matches_llama_quantize(name, tmp_path):
    """The q8_0 fixtures come from llama-quantize (its own key and tensor order, trailing 1-dims
    dropped: ssm_norm {128, 1} is {128}); the quantized blocks are the same bytes."""
    kv, t = read_gguf(convert_fixture(name, "q8_0", tmp_path))
    kv_ref, t_ref = read_gguf(FIXTURES / "models" / f"{name}-q8_0.gguf")
    assert kv == kv_ref
    assert sorted(t) == sorted(t_ref)
    for n, (typ, shape, data) in t_ref.items():
        ours = t[n][1]
        while len(ours) > 1 and ours[-1] == 1:
            ours = ours[:-1]
        assert t[n][0] == typ and ours == shape, n
        assert np.array_equal(t[n][2].ravel().view(np.uint8), data.ravel().view(np.uint8)), n


def neox_tokenizer_json():
    """gpt-neox-20b's tokenizer.json rebuilt from the vocab GGUF (byte-level BPE, NFC)."""
    r = GGUFReader(NEOX)
    toks = r.fields["tokenizer.ggml.tokens"].contents()[:50277]
    types = r.fields["tokenizer.ggml.token_type"].contents()
    added = [{"id": i, "content": toks[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": types[i] != CONTROL, "special": types[i] == CONTROL}
             for i in range(len(toks)) if types[i] in (CONTROL, USER_DEFINED)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    return {"version": "1.0", "added_tokens": added, "normalizer": {"type": "NFC"},
            "pre_tokenizer": byte_level, "post_processor": byte_level, "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False,
                      "vocab": {t: i for i, t in enumerate(toks)},
                      "merges": r.fields["tokenizer.ggml.merges"].contents()}}


@requires_fixtures
def test_gpt_neox_tokenizer_json(tmp_path):
    """A gpt-neox tokenizer.json converts like llama.cpp's get_vocab_base: pre "mpt" from the
    check-text hash, the same tokens, types and merges as the built-in vocab."""
    ckpt = tmp_path / "mamba1-tiny"
    shutil.copytree(FIXTURES / "hf" / "mamba1-tiny", ckpt)
    (ckpt / "tokenizer.json").write_text(json.dumps(neox_tokenizer_json(), ensure_ascii=False))
    out = tmp_path / "out.gguf"
    convert(ckpt, out, progress=False, name="tinyggml-ref-mamba1-tiny")
    kv, t = read_gguf(out)
    kv_ref, t_ref = read_gguf(FIXTURES / "models" / "mamba1-tiny-f32.gguf")
    assert kv["tokenizer.ggml.model"][1] == "gpt2" and kv["tokenizer.ggml.pre"][1] == "mpt"
    tokens, types = kv["tokenizer.ggml.tokens"][1], kv["tokenizer.ggml.token_type"][1]
    assert tokens[:50277] == kv_ref["tokenizer.ggml.tokens"][1][:50277]
    assert types[:50277] == kv_ref["tokenizer.ggml.token_type"][1][:50277]
    assert tokens[50277:] == [f"[PAD{i}]" for i in range(50277, 50280)]
    assert types[50277:] == [UNUSED] * 3     # get_vocab_base's padding (the GGUF has USER_DEFINED)
    assert kv["tokenizer.ggml.merges"] == kv_ref["tokenizer.ggml.merges"]
    assert kv["tokenizer.ggml.bos_token_id"][1] == 0 and kv["tokenizer.ggml.eos_token_id"][1] == 0
    assert list(t) == list(t_ref)


# ---- random checkpoints written here --------------------------------------------------------

LINES = ([f"The quick brown fox jumps over the lazy dog number {i}." for i in range(50)]
         + ["Hello world, this is a small test of tokenizers and models.",
            "Mamba state space models run in linear time.",
            "Permission is hereby granted, free of charge, to any person obtaining a copy."] * 5)
N_SPM = 390                     # Mamba-2 pads it to 400, Mamba-1 to 392


@pytest.fixture(scope="module")
def spm_model():
    """Bytes of a 390-piece BPE sentencepiece model (byte fallback, unk 0 / bos 1 / eos 2)."""
    import sentencepiece as spm
    f = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(LINES), model_writer=f, vocab_size=N_SPM, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity", character_coverage=1.0,
        minloglevel=2)
    return f.getvalue()


def mamba2_weights(rng, prefix, dt_bias_name, embedding="embeddings", lm_head="lm_head.weight",
                   n_rows=400, n_embd=64, n_layer=2, n_group=2, d_state=128, head_dim=64,
                   d_conv=4):
    """Random Mamba-2 weights; checkpoint names `prefix`layers.N..., `prefix``embedding`."""
    d_inner = 2 * n_embd
    n_head, ch = d_inner // head_dim, d_inner + 2 * n_group * d_state
    g = lambda *s, scale=1.0: (scale * rng.standard_normal(s)).astype(np.float32)
    w = {f"{prefix}{embedding}.weight": g(n_rows, n_embd),
         f"{prefix}norm_f.weight": 1 + g(n_embd, scale=0.2),
         lm_head: g(n_rows, n_embd, scale=0.1)}
    for i in range(n_layer):
        p = f"{prefix}layers.{i}."
        w.update({
            p + "norm.weight": 1 + g(n_embd, scale=0.2),
            p + "mixer.in_proj.weight": g(2 * d_inner + 2 * n_group * d_state + n_head, n_embd,
                                          scale=n_embd ** -0.5),
            p + "mixer.conv1d.weight": g(ch, 1, d_conv, scale=0.3),
            p + "mixer.conv1d.bias": g(ch, scale=0.1),
            p + f"mixer.{dt_bias_name}": np.log(np.expm1(rng.uniform(1e-3, 0.1, n_head)))
            .astype(np.float32),
            p + "mixer.A_log": np.log(rng.uniform(1, 16, n_head)).astype(np.float32),
            p + "mixer.D": rng.uniform(0.5, 1.5, n_head).astype(np.float32),
            p + "mixer.norm.weight": 1 + g(d_inner, scale=0.2),
            p + "mixer.out_proj.weight": g(n_embd, d_inner, scale=d_inner ** -0.5)})
    return w


def write_codestral(path, spm_model, prefix, seed=0):
    """The mistral layout of Mamba-Codestral-7B-v0.1, in miniature. Its tensor names: bare
    (layers.N.mixer.*, embedding.weight) or, as mistral_inference's state dict and the converters
    that strip "model." suggest, model.backbone.* / model.lm_head.weight."""
    path.mkdir()
    (path / "params.json").write_text(json.dumps({
        "dim": 64, "n_layers": 2, "vocab_size": N_SPM, "n_groups": 2, "rms_norm": True,
        "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 16,
        "tie_embeddings": False, "model_type": "mamba"}))
    w = mamba2_weights(np.random.default_rng(seed), prefix, "dt_bias", embedding="embedding",
                       lm_head=("model." if prefix else "") + "lm_head.weight")
    save_file(w, str(path / "consolidated.safetensors"))
    (path / "tokenizer.model.v3").write_bytes(spm_model)


def write_transformers_mamba2(path, seed=0, tokenizer=None, weights=None):
    """The same model in transformers' Mamba2ForCausalLM layout."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({
        "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "hidden_size": 64,
        "num_hidden_layers": 2, "n_groups": 2, "head_dim": 64, "num_heads": 2,
        "state_size": 128, "conv_kernel": 4, "expand": 2, "vocab_size": N_SPM,
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": False, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 0}))
    w = weights or mamba2_weights(np.random.default_rng(seed), "backbone.", "dt_bias")
    save_file(w, str(path / "model.safetensors"))
    for fname, data in (tokenizer or {}).items():
        (path / fname).write_bytes(data)
    return w


@pytest.mark.parametrize("prefix", ["", "model.backbone."])
def test_codestral_layout_converts_and_runs(tmp_path, spm_model, prefix):
    write_codestral(tmp_path / "codestral", spm_model, prefix)
    write_transformers_mamba2(tmp_path / "hf", tokenizer={"tokenizer.model": spm_model})
    a, b = tmp_path / "codestral.gguf", tmp_path / "hf.gguf"
    s = convert(tmp_path / "codestral", a, progress=False, name="mini-codestral")
    convert(tmp_path / "hf", b, progress=False, name="mini-codestral")
    assert s["arch"] == "mamba2" and s["n_vocab"] == 400 and s["n_tensors"] == 21
    kv, _ = read_gguf(a)
    assert kv["mamba2.ssm.state_size"][1] == 128 and kv["mamba2.ssm.group_count"][1] == 2
    assert kv["mamba2.ssm.time_step_rank"][1] == 2 and kv["tokenizer.ggml.model"][1] == "llama"
    assert kv["tokenizer.ggml.tokens"][1][N_SPM:] == [f"[PAD{i}]" for i in range(N_SPM, 400)]
    assert (kv["tokenizer.ggml.bos_token_id"][1], kv["tokenizer.ggml.eos_token_id"][1],
            kv["tokenizer.ggml.unknown_token_id"][1]) == (1, 2, 0)    # from the SPM model
    ids = ("tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id")
    assert_same_gguf(a, b, same_order=False, skip_keys=ids)     # names sort differently
    la = tinyggml.Model(str(a), n_threads=1).eval([1, 2, 3])
    lb = tinyggml.Model(str(b), n_threads=1).eval([1, 2, 3])
    assert la.shape == (3, 400) and np.isfinite(la).all() and np.abs(la).max() > 0
    assert np.array_equal(la, lb)


def test_sharded_and_bf16_checkpoints(tmp_path):
    """Shards (model.safetensors.index.json) and bf16 tensors give the same model."""
    w = write_transformers_mamba2(tmp_path / "one", tokenizer={})
    bf16 = {k: ((v.view(np.uint32) + 0x8000) >> 16 << 16).view(np.float32) for k, v in w.items()}
    write_transformers_mamba2(tmp_path / "ref", weights=bf16)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(tmp_path / "ref" / "config.json", sharded)
    names, weight_map = sorted(bf16), {}
    for k, part in enumerate((names[::2], names[1::2])):
        fname = f"model-0000{k + 1}-of-00002.safetensors"
        write_bf16_safetensors(sharded / fname, {n: bf16[n] for n in part})
        weight_map.update({n: fname for n in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    out, ref = tmp_path / "sharded.gguf", tmp_path / "ref.gguf"
    convert(sharded, out, vocab_from=write_vocab_gguf(tmp_path), progress=False, name="m")
    convert(tmp_path / "ref", ref, vocab_from=write_vocab_gguf(tmp_path), progress=False,
            name="m")
    assert_same_gguf(out, ref, same_order=False)
    _, t = read_gguf(out)       # llama.cpp's order: shards in turn, names sorted in each
    assert list(t) == [gguf_name(n)[0] for part in (names[::2], names[1::2]) for n in part]


def write_bf16_safetensors(path, tensors):
    """safetensors.numpy cannot write bf16: the header and raw bytes by hand."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        raw = (tensors[name].view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def write_vocab_gguf(tmp_path, n=N_SPM):
    """A vocab-only GGUF like llama.cpp's models/ggml-vocab-*.gguf (no pre key)."""
    import gguf
    path = tmp_path / "vocab.gguf"
    if not path.exists():
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_tokenizer_model("gpt2")
        w.add_token_list([f"t{i}" for i in range(n)])
        w.add_token_types([NORMAL] * n)
        w.add_token_merges(["t 1"])
        w.add_bos_token_id(0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        w.close()
    return path


def test_vocab_from_pads_and_defaults_pre(tmp_path):
    write_transformers_mamba2(tmp_path / "hf")
    out = tmp_path / "out.gguf"
    convert(tmp_path / "hf", out, vocab_from=write_vocab_gguf(tmp_path), progress=False)
    kv, _ = read_gguf(out)
    assert kv["general.name"][1] == "Hf"     # llama.cpp's name heuristic on the folder name
    assert kv["tokenizer.ggml.pre"][1] == "mpt"  # as llama.cpp's built-in gpt-neox vocab
    assert len(kv["tokenizer.ggml.tokens"][1]) == 400
    assert kv["tokenizer.ggml.token_type"][1][N_SPM:] == [UNUSED] * 10
    assert kv["tokenizer.ggml.merges"][1] == ["t 1"] and kv["tokenizer.ggml.bos_token_id"][1] == 0


def spm_tokenize(text, tokens, scores):
    """llama.cpp's SPM tokenizer (llm_tokenizer_spm): merge the best-scoring adjacent pair,
    leftmost first; pieces not in the vocab as <0xNN> bytes."""
    vocab = {t: i for i, t in enumerate(tokens)}
    syms = list("\u2581" + text.replace(" ", "\u2581"))
    while True:
        best = None
        for i in range(len(syms) - 1):
            j = vocab.get(syms[i] + syms[i + 1])
            if j is not None and (best is None or scores[j] > scores[vocab[best[1]]]):
                best = (i, syms[i] + syms[i + 1])
        if best is None:
            break
        syms[best[0]:best[0] + 2] = [best[1]]
    return [i for s in syms for i in ([vocab[s]] if s in vocab else
                                      [vocab[f"<0x{b:02X}>"] for b in s.encode()])]


def spm_escaped_tokenizer_json(sp):
    """sp as a '▁'-escaped BPE tokenizer.json, as transformers' SPM converter writes one."""
    vocab = {sp.IdToPiece(i): i for i in range(sp.vocab_size())}
    merges = sorted(((vocab[p], vocab[p[:k]], vocab[p[k:]], p[:k], p[k:])
                     for p, i in vocab.items() if sp.IsUnknown(i) + sp.IsControl(i)
                     + sp.IsByte(i) == 0 for k in range(1, len(p))
                     if p[:k] in vocab and p[k:] in vocab))
    return {"version": "1.0",
            "added_tokens": [{"id": i, "content": sp.IdToPiece(i), "special": True,
                              "normalized": False, "single_word": False, "lstrip": False,
                              "rstrip": False} for i in range(3)],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u2581"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
            "pre_tokenizer": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": True, "byte_fallback": True, "vocab": vocab,
                      "merges": [f"{a} {b}" for *_, a, b in merges]}}


def test_spm_escaped_tokenizer_json_is_written_as_spm(tmp_path, spm_model):
    """Mamba-Codestral's first transformers export: only a '▁'-escaped BPE tokenizer.json.
    As "gpt2" llama.cpp would make '[UNK_BYTE_0xe29681▁Hello]Hello' of it; as "llama" it
    tokenizes like the sentencepiece model."""
    import sentencepiece
    from tokenizers import Tokenizer
    sp = sentencepiece.SentencePieceProcessor(model_proto=spm_model)
    tj = json.dumps(spm_escaped_tokenizer_json(sp), ensure_ascii=False)
    texts = ["Hello world", "The lazy dog jumps over 42 foxes.", "héllo wörld \U0001f999 ok"]
    assert [Tokenizer.from_str(tj).encode(t, add_special_tokens=False).ids
            for t in texts] == [sp.encode(t) for t in texts]      # a faithful test input
    write_transformers_mamba2(tmp_path / "json", tokenizer={"tokenizer.json": tj.encode()})
    write_transformers_mamba2(tmp_path / "spm", tokenizer={"tokenizer.model": spm_model})
    convert(tmp_path / "json", tmp_path / "json.gguf", progress=False)
    convert(tmp_path / "spm", tmp_path / "spm.gguf", progress=False)
    kv, _ = read_gguf(tmp_path / "json.gguf")
    kv_spm, _ = read_gguf(tmp_path / "spm.gguf")
    assert kv["tokenizer.ggml.model"][1] == "llama" and kv["tokenizer.ggml.pre"][1] == "default"
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        assert kv[key] == kv_spm[key], key
    tokens, scores = kv["tokenizer.ggml.tokens"][1], kv["tokenizer.ggml.scores"][1]
    for t in texts + LINES[:5]:
        assert spm_tokenize(t, tokens, scores) == sp.encode(t), t


def write_state_spaces_mamba1(path, spm_model, tied, seed=1, n_embd=32, n_layer=2):
    """state-spaces/mamba-* layout: d_model / n_layer / ssm_cfg, backbone.embedding."""
    rng = np.random.default_rng(seed)
    d_inner, d_state, dt_rank, rows = 2 * n_embd, 16, 2, 392
    g = lambda *s, scale=1.0: (scale * rng.standard_normal(s)).astype(np.float32)
    emb = g(rows, n_embd)
    w = {"backbone.embedding.weight": emb, "backbone.norm_f.weight": 1 + g(n_embd, scale=0.2),
         "lm_head.weight": emb.copy() if tied else g(rows, n_embd, scale=0.1)}
    for i in range(n_layer):
        p = f"backbone.layers.{i}."
        w.update({p + "norm.weight": 1 + g(n_embd, scale=0.2),
                  p + "mixer.in_proj.weight": g(2 * d_inner, n_embd, scale=n_embd ** -0.5),
                  p + "mixer.conv1d.weight": g(d_inner, 1, 4, scale=0.3),
                  p + "mixer.conv1d.bias": g(d_inner, scale=0.1),
                  p + "mixer.x_proj.weight": g(dt_rank + 2 * d_state, d_inner, scale=0.1),
                  p + "mixer.dt_proj.weight": g(d_inner, dt_rank, scale=0.5),
                  p + "mixer.dt_proj.bias": np.log(np.expm1(rng.uniform(1e-3, 0.1, d_inner)))
                  .astype(np.float32),
                  p + "mixer.A_log": np.log(np.tile(np.arange(1, d_state + 1, dtype=np.float32),
                                                    (d_inner, 1))),
                  p + "mixer.D": np.ones(d_inner, np.float32),
                  p + "mixer.out_proj.weight": g(n_embd, d_inner, scale=d_inner ** -0.5)})
    path.mkdir()
    (path / "config.json").write_text(json.dumps({
        "d_model": n_embd, "n_layer": n_layer, "vocab_size": N_SPM, "ssm_cfg": {},
        "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
        "pad_vocab_size_multiple": 8}))
    save_file(w, str(path / "model.safetensors"))
    (path / "tokenizer.model").write_bytes(spm_model)


@pytest.mark.parametrize("tied", [True, False])
def test_state_spaces_mamba1(tmp_path, spm_model, tied):
    write_state_spaces_mamba1(tmp_path / "m", spm_model, tied)
    out = tmp_path / "m.gguf"
    s = convert(tmp_path / "m", out, "f16", progress=False)
    kv, t = read_gguf(out)
    assert s["arch"] == "mamba" and s["n_vocab"] == 392
    assert kv["mamba.ssm.time_step_rank"][1] == 2 and not kv["mamba.ssm.dt_b_c_rms"][1]
    assert kv["general.file_type"][1] == 1
    assert ("output.weight" in t) == (not tied)      # an lm_head equal to token_embd: omitted
    assert t["blk.0.ssm_in.weight"][0] == Q.F16 and t["blk.0.ssm_dt.weight"][0] == Q.F16
    assert t["blk.0.ssm_conv1d.weight"][0] == Q.F32 and t["blk.0.ssm_conv1d.weight"][1] == (4, 64)
    assert t["blk.0.ssm_a"][1] == (16, 64) and t["blk.0.ssm_a"][2][0, 1] == -2.0
    logits = tinyggml.Model(str(out), n_threads=1).eval([1, 5, 9])
    assert logits.shape == (3, 392) and np.isfinite(logits).all()


def test_q8_0_and_bf16_types(tmp_path, spm_model):
    write_state_spaces_mamba1(tmp_path / "m", spm_model, tied=False)
    for outtype, big, ftype in (("q8_0", Q.Q8_0, 7), ("bf16", Q.BF16, 32)):
        out = tmp_path / f"{outtype}.gguf"
        convert(tmp_path / "m", out, outtype, progress=False)
        kv, t = read_gguf(out)
        assert kv["general.file_type"][1] == ftype
        assert t["blk.0.ssm_in.weight"][0] == big and t["output.weight"][0] == big
        # dt_rank 2 rows cannot make 32-blocks: llama.cpp falls back to F16 for q8_0
        assert t["blk.0.ssm_dt.weight"][0] == (Q.F16 if outtype == "q8_0" else Q.BF16)
        assert t["blk.0.ssm_d"][0] == Q.F32 and t["output_norm.weight"][0] == Q.F32


def test_progress_on_stderr(tmp_path, spm_model, capsys):
    write_state_spaces_mamba1(tmp_path / "m", spm_model, tied=True)
    convert(tmp_path / "m", tmp_path / "a.gguf", progress=False)
    assert capsys.readouterr().err == ""
    convert(tmp_path / "m", tmp_path / "b.gguf", progress=True)
    assert capsys.readouterr().err != ""


def test_state_spaces_mamba2_keeps_equal_lm_head(tmp_path, spm_model):
    """state-spaces/mamba2-* config (ssm_cfg.layer = "Mamba2", llama.cpp's defaults d_state 128,
    headdim 64). llama.cpp omits an lm_head equal to the embedding only for Mamba-1; a Mamba-2
    lm_head that is present is written (transformers' tied checkpoints have none)."""
    w = mamba2_weights(np.random.default_rng(3), "backbone.", "dt_bias", n_group=1)
    w["lm_head.weight"] = w["backbone.embeddings.weight"].copy()
    write_transformers_mamba2(tmp_path / "m", weights=w, tokenizer={"tokenizer.model": spm_model})
    (tmp_path / "m" / "config.json").write_text(json.dumps({
        "d_model": 64, "d_intermediate": 0, "n_layer": 2, "vocab_size": N_SPM,
        "ssm_cfg": {"layer": "Mamba2"}, "rms_norm": True, "residual_in_fp32": True,
        "fused_add_norm": True, "pad_vocab_size_multiple": 16, "tie_embeddings": True}))
    s = convert(tmp_path / "m", tmp_path / "m.gguf", progress=False)
    kv, t = read_gguf(tmp_path / "m.gguf")
    assert s["architecture"] == "Mamba2ForCausalLM" and "output.weight" in t
    assert kv["mamba2.ssm.group_count"][1] == 1 and kv["mamba2.ssm.state_size"][1] == 128
    assert t["blk.0.ssm_norm.weight"][1] == (128, 1) and t["blk.0.ssm_a"][1] == (1, 2)


# ---- hybrids: against llama.cpp's converter (tests/fixtures/hybrid) --------------------------

HYBRID = TESTS / "fixtures" / "hybrid"
MAMBA_HYBRIDS = ["granitehybrid", "nemotron_h", "falcon-h1"]
HYBRIDS = MAMBA_HYBRIDS + ["lfm2", "qwen35"]
# the checkpoints tools/make_hybrid_fixtures.py saved and llama.cpp converted to <arch>-f32.gguf
# and <arch>-f16.gguf: sha256 over the sorted names of "name dtype [shape]\n" + the bytes
CHECKPOINT_SHA256 = {
    "granitehybrid": "f9d2082cf5ac7b8190796d3fbdc99aa8030f357efc5c9a726e20d7110d376056",
    "nemotron_h": "1607aa6fa0e3453bd06b0366489681a63706583b3375c3ccfc0d2176d846cde0",
    "falcon-h1": "89e66701026ef58537461a38f340fd67152d0cb57b7f13b0f7263510b9f15f14",
    "lfm2": "9442a0f4d4b20fe33c9e822f81756d4a91fd6b146c2b181b6b7ba87560c05b0f",
    "qwen35": "2c37896af62135c55174841d7e8026fcb2d5149da50a1e8dc761fa20cf73044f",
}
_BACK_MAMBA2 = {"ssm_in.weight": "in_proj.weight", "ssm_conv1d.weight": "conv1d.weight",
                "ssm_conv1d.bias": "conv1d.bias", "ssm_dt.bias": "dt_bias", "ssm_d": "D",
                "ssm_norm.weight": "norm.weight", "ssm_out.weight": "out_proj.weight"}
_BACK_ATTN = {"attn_q.weight": "q_proj.weight", "attn_k.weight": "k_proj.weight",
              "attn_v.weight": "v_proj.weight", "attn_output.weight": "o_proj.weight"}
# GGUF name -> checkpoint name, written out here: (globals, block prefix, names in a block)
BACK = {
    "granitehybrid": (
        {"token_embd.weight": "model.embed_tokens.weight",
         "output_norm.weight": "model.norm.weight"},
        "model.layers.",
        {"attn_norm.weight": "input_layernorm.weight",
         "ffn_norm.weight": "post_attention_layernorm.weight",
         "ffn_gate.weight": "shared_mlp.input_linear.weight",
         "ffn_up.weight": "shared_mlp.input_linear.weight",
         "ffn_down.weight": "shared_mlp.output_linear.weight",
         **{k: "mamba." + v for k, v in _BACK_MAMBA2.items()},
         **{k: "self_attn." + v for k, v in _BACK_ATTN.items()}}),
    "nemotron_h": (
        {"token_embd.weight": "backbone.embeddings.weight",
         "output_norm.weight": "backbone.norm_f.weight", "output.weight": "lm_head.weight"},
        "backbone.layers.",
        {"attn_norm.weight": "norm.weight", "ffn_up.weight": "mixer.up_proj.weight",
         "ffn_down.weight": "mixer.down_proj.weight",
         **{k: "mixer." + v for k, v in {**_BACK_MAMBA2, **_BACK_ATTN}.items()}}),
    "falcon-h1": (
        {"output_norm.weight": "model.final_layernorm.weight"},
        "model.layers.",
        {"attn_norm.weight": "input_layernorm.weight", "ffn_norm": "pre_ff_layernorm.weight",
         "ffn_up.weight": "feed_forward.up_proj.weight",
         **{k: "mamba." + v for k, v in _BACK_MAMBA2.items() if k not in ("ssm_in.weight",
                                                                           "ssm_out.weight")}}),
    "lfm2": (
        {"token_embd.weight": "model.embed_tokens.weight",
         "token_embd_norm.weight": "model.embedding_norm.weight"},
        "model.layers.",
        {"attn_norm.weight": "operator_norm.weight", "ffn_norm.weight": "ffn_norm.weight",
         "ffn_gate.weight": "feed_forward.w1.weight", "ffn_up.weight": "feed_forward.w3.weight",
         "ffn_down.weight": "feed_forward.w2.weight",
         "shortconv.conv.weight": "conv.conv.weight",
         "shortconv.in_proj.weight": "conv.in_proj.weight",
         "shortconv.out_proj.weight": "conv.out_proj.weight",
         "attn_q_norm.weight": "self_attn.q_layernorm.weight",
         "attn_k_norm.weight": "self_attn.k_layernorm.weight",
         "attn_output.weight": "self_attn.out_proj.weight",
         **{k: "self_attn." + v for k, v in _BACK_ATTN.items() if k != "attn_output.weight"}}),
    "qwen35": (
        {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight"},
        "model.layers.",
        {"ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
         "ffn_down.weight": "mlp.down_proj.weight",
         **{k: "linear_attn." + v for k, v in {
             "attn_qkv.weight": "in_proj_qkv.weight", "attn_gate.weight": "in_proj_z.weight",
             "ssm_alpha.weight": "in_proj_a.weight", "ssm_beta.weight": "in_proj_b.weight",
             "ssm_conv1d.weight": "conv1d.weight", "ssm_dt.bias": "dt_bias",
             "ssm_norm.weight": "norm.weight", "ssm_out.weight": "out_proj.weight"}.items()},
         **{k: "self_attn." + v for k, v in _BACK_ATTN.items()}}),
}


def checkpoint_sha256(w):
    h = sha256()
    for name in sorted(w):
        h.update(f"{name} {w[name].dtype} {list(w[name].shape)}\n".encode())
        h.update(w[name].tobytes())
    return h.hexdigest()


def _cached_attention(q, k, v, st, scale):
    """Append k, v (n_kv, hd) to the cache lists in st; causal grouped-query softmax attention
    of q (n_q, hd) over every cached position: (n_q, hd)."""
    st["k"].append(k)
    st["v"].append(v)
    K, V = np.stack(st["k"]), np.stack(st["v"])
    nq, nkv = q.shape[0], k.shape[0]
    o = np.zeros_like(q)
    for h in range(nq):
        s = K[:, h // (nq // nkv)] @ q[h] * scale
        s = np.exp(s - s.max())
        o[h] = s / s.sum() @ V[:, h // (nq // nkv)]
    return o


def _unpermute(w, n_head):
    """Rows (2i, 2i + 1) of each head back to (i, i + head_dim / 2)."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _untile(w, axis, n_k, hd):
    """Qwen3.5's value heads back from tiled (k0v0, k1v0, ..) to grouped (k0v0, k0v1, ..)
    order, `hd` rows (or columns) each, along `axis`."""
    x = np.moveaxis(w, axis, 0)
    x = x.reshape(-1, n_k, hd, *x.shape[1:]).swapaxes(0, 1).reshape(x.shape)
    return np.moveaxis(x, 0, axis)


def _qwen35_back(local, data, cfg):
    """Undo the value-head tiling of Qwen3.5's linear-attention tensors."""
    nk, dv = cfg["linear_num_key_heads"], cfg["linear_value_head_dim"]
    qk = 2 * nk * cfg["linear_key_head_dim"]
    if local in ("attn_qkv.weight", "ssm_conv1d.weight"):
        return np.concatenate([data[:qk], _untile(data[qk:], 0, nk, dv)])
    if local == "attn_gate.weight":
        return _untile(data, 0, nk, dv)
    if local in ("ssm_alpha.weight", "ssm_beta.weight", "ssm_dt.bias"):
        return _untile(data, 0, nk, 1)
    if local == "ssm_out.weight":
        return _untile(data, 1, nk, dv)
    return data


def hybrid_checkpoint(arch, tmp_path):
    """The checkpoint behind fixtures/hybrid/<arch>-f32.gguf, as tmp_path/hf-<arch> (the folder
    name makes general.name, as for llama.cpp). hf-<arch>/ holds its config, tokenizer and the
    tensors the GGUF cannot give back bit for bit (A_log, whose exp is rounded; Falcon-H1's
    weights with a multiplier folded in; Qwen3.5's zero-centred norm weights, stored as 1 + w;
    none for LFM2); the rest comes back from the GGUF by undoing moves only: reshapes, the q/k
    row permutation, Granite's gate/up split, Qwen3.5's value-head tiling. The result must hash
    to the saved checkpoint's CHECKPOINT_SHA256."""
    src, dst = HYBRID / f"hf-{arch}", tmp_path / f"hf-{arch}"
    shutil.copytree(src, dst)
    w = load_file(src / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    heads = {"attn_q.weight": cfg["num_attention_heads"],
             "attn_k.weight": cfg["num_key_value_heads"]}
    glob, prefix, block = BACK[arch]
    for name, (_, _, data) in read_gguf(HYBRID / f"{arch}-f32.gguf")[1].items():
        _, il, local = name.split(".", 2) if name.startswith("blk.") else (None, None, name)
        hf = glob.get(name) if il is None else block.get(local) and f"{prefix}{il}.{block[local]}"
        if hf is None or hf in w and local != "ffn_up.weight":
            continue        # kept in hf-<arch>/ (or ssm_a: A_log is)
        if arch == "qwen35":
            data = _qwen35_back(local, data, cfg)
        if local in ("ssm_conv1d.weight", "shortconv.conv.weight"):
            data = data[:, None, :]
        elif local in ("ssm_d", "ssm_norm.weight"):
            data = data.reshape(-1)
        elif local in heads and arch in ("granitehybrid", "nemotron_h"):
            data = _unpermute(data, heads[local])
        elif local == "ffn_up.weight" and arch == "granitehybrid":
            data = np.concatenate([w[hf], data])        # input_linear: [gate; up]
        w[hf] = np.ascontiguousarray(data)
    assert checkpoint_sha256(w) == CHECKPOINT_SHA256[arch], "rebuilt checkpoint differs"
    save_file(w, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("arch", HYBRIDS)
@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_hybrid_matches_llamacpp(arch, outtype, tmp_path):
    """Every key (order, type, value) and tensor (order, name, type, shape, bits) as llama.cpp's
    converter wrote them: the files are the same bytes."""
    out = tmp_path / f"{arch}-{outtype}.gguf"
    s = convert(hybrid_checkpoint(arch, tmp_path), out, outtype, progress=False)
    assert s["arch"] == arch and s["tokenizer"].endswith("tokenizer.model")
    ref = HYBRID / f"{arch}-{outtype}.gguf"
    assert_same_gguf(out, ref)
    assert out.read_bytes() == ref.read_bytes()


# ---- hybrids: random checkpoints against transformers' semantics -----------------------------

def hybrid_config(arch, rms_norm=True):
    """A small config.json as transformers 4.57 writes it (rope_theta at the top level, layer
    kinds in the released checkpoints' spelling); LFM2's as transformers 5 does."""
    common = {"vocab_size": 264, "hidden_size": 48, "intermediate_size": 80,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
              "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
              "torch_dtype": "float32", "transformers_version": "4.57.6", "use_cache": True}
    if arch == "granitehybrid":
        return {"architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid",
                **common, "shared_intermediate_size": 80, "num_hidden_layers": 4,
                "layer_types": ["mamba", "attention", "mamba", "attention"],
                "num_local_experts": 0, "num_experts_per_tok": 0, "mamba_n_heads": 6,
                "mamba_n_groups": 2, "mamba_d_state": 8, "mamba_d_head": 16, "mamba_d_conv": 4,
                "mamba_expand": 2, "mamba_chunk_size": 256, "mamba_conv_bias": True,
                "mamba_proj_bias": False, "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
                "attention_multiplier": 0.1, "logits_scaling": 1.5, "rms_norm_eps": 1e-5,
                "position_embedding_type": "nope", "rope_theta": 10000, "rope_scaling": None,
                "tie_word_embeddings": True, "hidden_act": "silu", "router_aux_loss_coef": 0.01}
    if arch == "falcon-h1":
        return {"architectures": ["FalconH1ForCausalLM"], "model_type": "falcon_h1", **common,
                "num_hidden_layers": 2, "head_dim": 12, "mamba_d_ssm": 96, "mamba_n_heads": 6,
                "mamba_d_head": 16, "mamba_n_groups": 2, "mamba_d_state": 8, "mamba_d_conv": 4,
                "mamba_expand": 2, "mamba_chunk_size": 128, "mamba_conv_bias": True,
                "mamba_proj_bias": False, "mamba_rms_norm": rms_norm,
                "mamba_norm_before_gate": False, "rope_theta": 100000.0, "rope_scaling": None,
                "embedding_multiplier": 1.3, "lm_head_multiplier": 0.6,
                "mlp_multipliers": [1.2, 0.7], "key_multiplier": 0.8,
                "attention_in_multiplier": 1.1, "attention_out_multiplier": 0.9,
                "ssm_multipliers": [0.9, 1.2, 0.8, 1.3, 1.1], "ssm_in_multiplier": 1.05,
                "ssm_out_multiplier": 0.95, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                "hidden_act": "silu", "mlp_bias": False, "projectors_bias": False}
    if arch == "lfm2":      # FFN: int(2 * 200 / 3) = 133 rounded up to 160 (block_multiple_of)
        return {"architectures": ["Lfm2ForCausalLM"], "model_type": "lfm2",
                **{k: v for k, v in common.items() if k not in ("attention_bias", "torch_dtype")},
                "intermediate_size": 200, "block_auto_adjust_ff_dim": True,
                "block_ffn_dim_multiplier": 1.0, "block_multiple_of": 32, "conv_L_cache": 3,
                "conv_bias": False, "dtype": "float32", "full_attn_idxs": None,
                "layer_types": ["conv", "full_attention", "conv", "full_attention", "conv"],
                "num_hidden_layers": 5, "norm_eps": 1e-5, "initializer_range": 0.02,
                "rope_parameters": {"rope_theta": 20000.0, "rope_type": "default"},
                "tie_word_embeddings": True, "transformers_version": "5.24.0"}
    return {"architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", **common,
            "num_hidden_layers": 4, "hybrid_override_pattern": "M*-M", "head_dim": 12,
            "mamba_num_heads": 6, "mamba_head_dim": 16, "n_groups": 2, "ssm_state_size": 8,
            "conv_kernel": 4, "expand": 2, "chunk_size": 128, "use_conv_bias": True,
            "use_bias": False, "mlp_bias": False, "mlp_hidden_act": "relu2",
            "mamba_hidden_act": "silu", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": False,
            "residual_in_fp32": False, "rescale_prenorm_residual": True}


def hybrid_layout(arch, cfg):
    """(layer prefix, mamba prefix, attention prefix, kinds "M" / "*" / "-" / "B" (both))."""
    if arch == "granitehybrid":
        return "model.layers.", "mamba.", "self_attn.", ["M" if t == "mamba" else "*"
                                                        for t in cfg["layer_types"]]
    if arch == "falcon-h1":
        return "model.layers.", "mamba.", "self_attn.", ["B"] * cfg["num_hidden_layers"]
    return "backbone.layers.", "mixer.", "mixer.", list(cfg["hybrid_override_pattern"])


def hybrid_weights(arch, cfg, seed=0):
    """Random weights with transformers' names and shapes."""
    rng = np.random.default_rng(seed)
    g = lambda *s, scale=1.0: (scale * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    if arch == "lfm2":
        return lfm2_weights(cfg, g)
    e, v, ff = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    nh, hd = 6, 16                                  # Mamba-2 heads, head size (all three configs)
    di, gs = nh * hd, 2 * 8                         # d_inner, n_group * d_state
    hq = cfg.get("head_dim", e // cfg["num_attention_heads"])
    nq, nk = cfg["num_attention_heads"] * hq, cfg["num_key_value_heads"] * hq
    layer, mamba, attn, kinds = hybrid_layout(arch, cfg)
    glob = {"granitehybrid": ("model.embed_tokens", "model.norm"),
            "falcon-h1": ("model.embed_tokens", "model.final_layernorm"),
            "nemotron_h": ("backbone.embeddings", "backbone.norm_f")}[arch]
    w = {glob[0] + ".weight": g(v, e, scale=0.7), glob[1] + ".weight": 1 + g(e, scale=0.2)}
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = g(v, e, scale=0.3)
    pre_norm = "norm.weight" if arch == "nemotron_h" else "input_layernorm.weight"
    for il, kind in enumerate(kinds):
        p = f"{layer}{il}."
        w[p + pre_norm] = 1 + g(e, scale=0.2)
        if kind in "MB":
            m = p + mamba
            w.update({m + "in_proj.weight": g(2 * di + 2 * gs + nh, e, scale=e ** -0.5),
                      m + "conv1d.weight": g(di + 2 * gs, 1, 4, scale=0.3),
                      m + "conv1d.bias": g(di + 2 * gs, scale=0.1),
                      m + "dt_bias": np.log(np.expm1(rng.uniform(1e-3, 0.1, nh)))
                      .astype(np.float32),
                      m + "A_log": np.log(rng.uniform(1, 16, nh)).astype(np.float32),
                      m + "D": rng.uniform(0.5, 1.5, nh).astype(np.float32),
                      m + "out_proj.weight": g(e, di, scale=di ** -0.5)})
            if cfg.get("mamba_rms_norm", True):
                w[m + "norm.weight"] = 1 + g(di, scale=0.2)
        if kind in "*B":
            a = p + attn
            w.update({a + "q_proj.weight": g(nq, e, scale=e ** -0.5),
                      a + "k_proj.weight": g(nk, e, scale=e ** -0.5),
                      a + "v_proj.weight": g(nk, e, scale=e ** -0.5),
                      a + "o_proj.weight": g(e, nq, scale=nq ** -0.5)})
        if arch == "granitehybrid":
            w.update({p + "post_attention_layernorm.weight": 1 + g(e, scale=0.2),
                      p + "shared_mlp.input_linear.weight": g(2 * ff, e, scale=e ** -0.5),
                      p + "shared_mlp.output_linear.weight": g(e, ff, scale=ff ** -0.5)})
        elif arch == "falcon-h1":
            w.update({p + "pre_ff_layernorm.weight": 1 + g(e, scale=0.2),
                      p + "feed_forward.gate_proj.weight": g(ff, e, scale=e ** -0.5),
                      p + "feed_forward.up_proj.weight": g(ff, e, scale=e ** -0.5),
                      p + "feed_forward.down_proj.weight": g(e, ff, scale=ff ** -0.5)})
        elif kind == "-":
            w.update({p + "mixer.up_proj.weight": g(ff, e, scale=e ** -0.5),
                      p + "mixer.down_proj.weight": g(e, ff, scale=ff ** -0.5)})
    return w


def lfm2_weights(cfg, g, ff=160):
    """Lfm2ForCausalLM's names and shapes (ff: the FFN size Lfm2MLP makes of the config)."""
    e, v = cfg["hidden_size"], cfg["vocab_size"]
    hd = e // cfg["num_attention_heads"]
    nq, nk = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    w = {"model.embed_tokens.weight": g(v, e, scale=0.7),
         "model.embedding_norm.weight": 1 + g(e, scale=0.2)}
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = g(v, e, scale=0.3)
    for il, kind in enumerate(cfg["layer_types"]):
        p = f"model.layers.{il}."
        w.update({p + "operator_norm.weight": 1 + g(e, scale=0.2),
                  p + "ffn_norm.weight": 1 + g(e, scale=0.2),
                  p + "feed_forward.w1.weight": g(ff, e, scale=e ** -0.5),
                  p + "feed_forward.w3.weight": g(ff, e, scale=e ** -0.5),
                  p + "feed_forward.w2.weight": g(e, ff, scale=ff ** -0.5)})
        if kind == "conv":
            w.update({p + "conv.conv.weight": g(e, 1, cfg["conv_L_cache"], scale=0.5),
                      p + "conv.in_proj.weight": g(3 * e, e, scale=e ** -0.5),
                      p + "conv.out_proj.weight": g(e, e, scale=e ** -0.5)})
        else:
            a = p + "self_attn."
            w.update({a + "q_proj.weight": g(nq, e, scale=e ** -0.5),
                      a + "k_proj.weight": g(nk, e, scale=e ** -0.5),
                      a + "v_proj.weight": g(nk, e, scale=e ** -0.5),
                      a + "out_proj.weight": g(e, nq, scale=nq ** -0.5),
                      a + "q_layernorm.weight": 1 + g(hd, scale=0.2),
                      a + "k_layernorm.weight": 1 + g(hd, scale=0.2)})
    return w


def write_hybrid(path, arch, cfg=None, weights=None, seed=0):
    cfg = cfg or hybrid_config(arch)
    path.mkdir()
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    w = hybrid_weights(arch, cfg, seed) if weights is None else weights
    save_file(w, str(path / "model.safetensors"), metadata={"format": "pt"})
    return cfg, w


def hf_logits(arch, cfg, w, tokens):
    """float64 logits of checkpoint (cfg, w) for `tokens` fed one by one, written after
    transformers' modeling_granitemoehybrid / _falcon_h1 / _nemotron_h: each multiplier where
    that code applies it, q/k rows as stored, input_linear chunked gate first, Falcon-H1's rope
    rotating halves. The Mamba-2 mixer is the reference's (mamba_np), given A = -exp(A_log) and
    the conv weight without its middle axis; Falcon-H1's in_proj output scaled per row block."""
    if arch == "lfm2":
        return lfm2_logits(cfg, w, tokens)
    f = {k: v.astype(np.float64) for k, v in w.items()}
    c = lambda k, d=1.0: float(cfg.get(k, d))       # noqa: E731
    eps = c("rms_norm_eps", c("layer_norm_epsilon", 1e-5))
    e, nh, hd, g = cfg["hidden_size"], 6, 16, 2
    hp = dict(d_inner=nh * hd, d_state=8, n_head=nh, n_group=g, head_dim=hd, eps=eps)
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hq = cfg.get("head_dim", e // nq)
    layer, mamba, attn, kinds = hybrid_layout(arch, cfg)
    pre_norm = "norm.weight" if arch == "nemotron_h" else "input_layernorm.weight"
    emb = next(v for k, v in f.items() if k.endswith(("embed_tokens.weight", "embeddings.weight")))
    out_norm = next(v for k, v in f.items()
                    if k.endswith(("model.norm.weight", "final_layernorm.weight", "norm_f.weight")))
    lm_head = f.get("lm_head.weight", emb)
    mup = np.ones(2 * nh * hd + 2 * g * 8 + nh)
    if arch == "falcon-h1":
        edges = (0, nh * hd, 2 * nh * hd, 2 * nh * hd + 16, 2 * nh * hd + 32, len(mup))
        for a, b, m in zip(edges, edges[1:], cfg["ssm_multipliers"]):
            mup[a:b] = m
    states = [{"conv": np.zeros((3, nh * hd + 2 * g * 8)), "ssm": np.zeros((nh, hd, 8)),
               "k": [], "v": []} for _ in kinds]

    def mixer(x, p, st):
        m = p + mamba
        lw = {"ssm_in.weight": f[m + "in_proj.weight"] * mup[:, None],
              "ssm_conv1d.weight": f[m + "conv1d.weight"][:, 0],
              "ssm_conv1d.bias": f[m + "conv1d.bias"],
              "ssm_dt.bias": f[m + "dt_bias"], "ssm_a": -np.exp(f[m + "A_log"])[:, None],
              "ssm_d": f[m + "D"][:, None], "ssm_out.weight": f[m + "out_proj.weight"]}
        if m + "norm.weight" in f:
            lw["ssm_norm.weight"] = f[m + "norm.weight"].reshape(g, -1)
        return mamba2_mixer(x * c("ssm_in_multiplier"), lw, hp, st) * c("ssm_out_multiplier")

    def attention(x, p, st):
        a = p + attn
        q = (f[a + "q_proj.weight"] @ x).reshape(nq, hq)
        k = (f[a + "k_proj.weight"] @ x).reshape(nkv, hq) * c("key_multiplier")
        v = (f[a + "v_proj.weight"] @ x).reshape(nkv, hq)
        if arch == "falcon-h1":
            rope(q, len(st["k"]), hq, True, cfg["rope_theta"])
            rope(k, len(st["k"]), hq, True, cfg["rope_theta"])
        o = _cached_attention(q, k, v, st, c("attention_multiplier", hq ** -0.5))
        return f[a + "o_proj.weight"] @ o.reshape(-1)

    def mlp(x, p):
        if arch == "granitehybrid":
            gate, up = np.split(f[p + "shared_mlp.input_linear.weight"] @ x, 2)
            return f[p + "shared_mlp.output_linear.weight"] @ (silu(gate) * up)
        if arch == "falcon-h1":
            gm, dm = cfg["mlp_multipliers"]
            ffp = p + "feed_forward."
            h = (f[ffp + "up_proj.weight"] @ x) * silu(f[ffp + "gate_proj.weight"] @ x * gm)
            return f[ffp + "down_proj.weight"] @ h * dm
        up = f[p + "mixer.up_proj.weight"] @ x
        return f[p + "mixer.down_proj.weight"] @ np.maximum(up, 0) ** 2

    logits = []
    for tok in tokens:
        x = emb[tok] * c("embedding_multiplier")
        for il, kind in enumerate(kinds):
            p = f"{layer}{il}."
            h = rmsnorm(x, f[p + pre_norm], eps)
            rm = c("residual_multiplier")
            if kind == "B":
                a = attention(h * c("attention_in_multiplier"), p, states[il])
                x = x + mixer(h, p, states[il]) + a * c("attention_out_multiplier")
            elif kind == "M":
                x = x + rm * mixer(h, p, states[il])
            elif kind == "*":
                x = x + rm * attention(h, p, states[il])
            else:
                x = x + mlp(h, p)
            if arch != "nemotron_h":
                ffn_norm = f[p + ("post_attention_layernorm.weight" if arch == "granitehybrid"
                                  else "pre_ff_layernorm.weight")]
                x = x + rm * mlp(rmsnorm(x, ffn_norm, eps), p)
        logits.append(rmsnorm(x, out_norm, eps) @ lm_head.T * c("lm_head_multiplier")
                      / c("logits_scaling"))
    return np.array(logits)


def lfm2_logits(cfg, w, tokens):
    """float64 logits after transformers' modeling_lfm2, tokens fed one by one. Short conv:
    in_proj rows chunked B, C, x; F.conv1d over B * x with the weight (d, 1, L) as stored, left
    padding L - 1 (tap j on the input L - 1 - j steps back), no bias; gated by C. Attention:
    q_layernorm / k_layernorm per head before rope (rotate_half: pairs (i, i + hd / 2)), repeat_kv
    groups, 1 / sqrt(hd). Final norm: embedding_norm; lm_head tied unless saved."""
    f = {k: v.astype(np.float64) for k, v in w.items()}
    e, L, eps = cfg["hidden_size"], cfg["conv_L_cache"], cfg["norm_eps"]
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = e // nq
    theta = (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta"))
    kinds = cfg.get("layer_types") or ["full_attention" if il in cfg["full_attn_idxs"] else "conv"
                                       for il in range(cfg["num_hidden_layers"])]
    emb = f["model.embed_tokens.weight"]
    lm_head = f.get("lm_head.weight", emb)
    states = [{"conv": np.zeros((L - 1, e)), "k": [], "v": []} for _ in kinds]

    def short_conv(x, p, st):
        b, c, xx = np.split(f[p + "conv.in_proj.weight"] @ x, 3)
        win = np.vstack([st["conv"], b * xx])          # inputs t - L + 1 .. t
        st["conv"] = win[1:]
        y = sum(f[p + "conv.conv.weight"][:, 0, j] * win[j] for j in range(L))
        return f[p + "conv.out_proj.weight"] @ (c * y)

    def attention(x, p, st):
        a = p + "self_attn."
        q = rmsnorm((f[a + "q_proj.weight"] @ x).reshape(nq, hd), f[a + "q_layernorm.weight"], eps)
        k = rmsnorm((f[a + "k_proj.weight"] @ x).reshape(nkv, hd), f[a + "k_layernorm.weight"], eps)
        v = (f[a + "v_proj.weight"] @ x).reshape(nkv, hd)
        rope(q, len(st["k"]), hd, True, theta)
        rope(k, len(st["k"]), hd, True, theta)
        o = _cached_attention(q, k, v, st, hd ** -0.5)
        return f[a + "out_proj.weight"] @ o.reshape(-1)

    logits = []
    for tok in tokens:
        x = emb[tok]
        for il, kind in enumerate(kinds):
            p = f"model.layers.{il}."
            h = rmsnorm(x, f[p + "operator_norm.weight"], eps)
            x = x + (short_conv(h, p, states[il]) if kind == "conv"
                     else attention(h, p, states[il]))
            h = rmsnorm(x, f[p + "ffn_norm.weight"], eps)
            ffp = p + "feed_forward."
            x = x + f[ffp + "w2.weight"] @ (silu(f[ffp + "w1.weight"] @ h)
                                            * (f[ffp + "w3.weight"] @ h))
        logits.append(rmsnorm(x, f["model.embedding_norm.weight"], eps) @ lm_head.T)
    return np.array(logits)


@pytest.mark.parametrize("arch,rms_norm", [("granitehybrid", True), ("nemotron_h", True),
                                           ("falcon-h1", True), ("falcon-h1", False),
                                           ("lfm2", True)])
def test_hybrid_logits_follow_transformers(arch, rms_norm, tmp_path):
    """A converted random checkpoint runs in tinyggml to the float64 logits of hf_logits (the
    multipliers, splits and kinds mean what transformers makes of them)."""
    cfg, w = write_hybrid(tmp_path / "m", arch, hybrid_config(arch, rms_norm), seed=7)
    out = tmp_path / "m.gguf"
    s = convert(tmp_path / "m", out, vocab_from=write_vocab_gguf(tmp_path), progress=False)
    assert s["arch"] == arch and s["n_vocab"] == 264
    toks = np.random.default_rng(3).integers(0, 264, 24)
    want = hf_logits(arch, cfg, w, toks)
    got = tinyggml.Model(str(out), n_threads=2, kv_type="f32").eval(toks)
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=3e-5 * float(np.abs(want).max()))


def test_hybrid_keys_and_types(tmp_path):
    """Granite: per-layer head_count_kv, the multipliers as keys, no rope (context 2**20);
    Nemotron-H: per-layer feed_forward_length; Falcon-H1: a `blk.N.ffn_norm` with no .weight.
    f16: the 2-D weights; norms, conv, A, D, biases stay F32. Shapes in ggml order."""
    vocab = write_vocab_gguf(tmp_path)
    kv, t, w = {}, {}, {}
    for arch in MAMBA_HYBRIDS:
        cfg = hybrid_config(arch)
        w[arch] = hybrid_weights(arch, cfg)
        if arch == "granitehybrid":     # an embedding padded past vocab_size: the key stays 261
            cfg["vocab_size"] = 261
        write_hybrid(tmp_path / arch, arch, cfg, w[arch])
        convert(tmp_path / arch, tmp_path / f"{arch}.gguf", "f16", vocab_from=vocab, progress=False)
        kv[arch], t[arch] = read_gguf(tmp_path / f"{arch}.gguf")
    g, n, fh = (kv[a] for a in MAMBA_HYBRIDS)
    assert g["granitehybrid.vocab_size"][1] == 261 and len(g["tokenizer.ggml.tokens"][1]) == 264
    assert g["granitehybrid.attention.head_count_kv"][1] == [0, 2, 0, 2]
    assert g["granitehybrid.context_length"][1] == 2 ** 20
    assert not g["granitehybrid.rope.scaling.finetuned"][1]
    assert [round(g[f"granitehybrid.{k}"][1], 6) for k in ("embedding_scale", "residual_scale",
            "attention.scale", "logit_scale")] == [2.0, 0.5, 0.1, 1.5]
    assert n["nemotron_h.feed_forward_length"][1] == [0, 0, 80, 0]
    assert n["nemotron_h.attention.head_count_kv"][1] == [0, 2, 0, 0]
    assert fh["falcon-h1.context_length"][1] == 4096 and fh["falcon-h1.rope.freq_base"][1] == 1e5
    assert "blk.1.ffn_norm" in t["falcon-h1"] and "blk.1.ffn_norm.weight" not in t["falcon-h1"]
    assert "output.weight" not in t["granitehybrid"]            # tied: no lm_head saved
    for arch in MAMBA_HYBRIDS:
        for name, (typ, shape, _) in t[arch].items():
            small = (len(shape) == 1 or "norm" in name or "conv1d" in name
                     or name.endswith(("ssm_a", "ssm_d")))
            assert typ == (Q.F32 if small else Q.F16), (arch, name)
    assert t["granitehybrid"]["blk.0.ssm_norm.weight"][1] == (48, 2)
    assert t["granitehybrid"]["blk.0.ssm_a"][1] == (1, 6)
    assert t["nemotron_h"]["blk.3.ssm_d"][1] == (1, 6)
    assert t["granitehybrid"]["blk.1.ffn_gate.weight"][1] == (48, 80)
    assert t["falcon-h1"]["blk.0.ssm_conv1d.weight"][1] == (4, 128)


def test_falcon_multipliers_fold_in_torch_order(tmp_path):
    """k_proj * key_multiplier * attention_in_multiplier and in_proj * ssm_in_multiplier * the
    row block's factor: one float32 rounding per factor, left to right, as torch computes
    llama.cpp's expressions (the other order gives other bits)."""
    cfg, w = write_hybrid(tmp_path / "m", "falcon-h1")
    convert(tmp_path / "m", tmp_path / "m.gguf", vocab_from=write_vocab_gguf(tmp_path),
            progress=False)
    _, t = read_gguf(tmp_path / "m.gguf")
    f = lambda *m: [np.float32(x) for x in m]       # noqa: E731
    k = w["model.layers.1.self_attn.k_proj.weight"]
    km, ain = f(cfg["key_multiplier"], cfg["attention_in_multiplier"])
    assert np.array_equal(t["blk.1.attn_k.weight"][2], k * km * ain)
    assert not np.array_equal(k * km * ain, k * ain * km)
    x = w["model.layers.0.mamba.in_proj.weight"][96:192]     # the x rows
    sin, mx = f(cfg["ssm_in_multiplier"], cfg["ssm_multipliers"][1])
    assert np.array_equal(t["blk.0.ssm_in.weight"][2][96:192], x * sin * mx)
    assert not np.array_equal(x * sin * mx, x * (sin * mx))


def test_hybrid_errors(tmp_path):
    cfg = hybrid_config("granitehybrid")
    write_hybrid(tmp_path / "moe", "granitehybrid", {**cfg, "num_local_experts": 8})
    with pytest.raises(TinyGGMLError, match=r"config\.json: GraniteMoeHybridForCausalLM with "
                       r"num_local_experts 8 \(mixture of experts\) is not supported"):
        convert(tmp_path / "moe", tmp_path / "o.gguf", progress=False)
    w = hybrid_weights("granitehybrid", cfg)
    del w["model.layers.2.mamba.D"], w["model.layers.3.self_attn.k_proj.weight"]
    write_hybrid(tmp_path / "missing", "granitehybrid", weights=w)
    with pytest.raises(TinyGGMLError, match=r"missing tensor\(s\) for GraniteMoeHybridForCausalLM: "
                                            r"blk\.2\.ssm_d, blk\.3\.attn_k\.weight$"):
        convert(tmp_path / "missing", tmp_path / "o.gguf", progress=False)
    w = hybrid_weights("granitehybrid", cfg)
    w["model.layers.0.self_attn.q_proj.weight"] = w["model.layers.1.self_attn.q_proj.weight"]
    write_hybrid(tmp_path / "kind", "granitehybrid", weights=w)
    with pytest.raises(TinyGGMLError, match=r"'model\.layers\.0\.self_attn\.q_proj\.weight' "
                       r"is in block 0, which the config makes a layer without attn"):
        convert(tmp_path / "kind", tmp_path / "o.gguf", progress=False)
    w = hybrid_weights("granitehybrid", cfg)
    w["model.layers.0.mamba.in_proj.bias"] = np.zeros(2 * 96 + 32 + 6, np.float32)
    write_hybrid(tmp_path / "bias", "granitehybrid", weights=w)
    with pytest.raises(TinyGGMLError,
                       match=r"'model\.layers\.0\.mamba\.in_proj\.bias' is not part"):
        convert(tmp_path / "bias", tmp_path / "o.gguf", progress=False)
    write_hybrid(tmp_path / "nmoe", "nemotron_h", {**hybrid_config("nemotron_h"),
                                                   "hybrid_override_pattern": "M*EM"})
    with pytest.raises(TinyGGMLError, match=r"mixture-of-experts Nemotron-H layers"):
        convert(tmp_path / "nmoe", tmp_path / "o.gguf", progress=False)
    w = hybrid_weights("falcon-h1", hybrid_config("falcon-h1"))
    w["model.layers.0.mamba.out_proj.weight"] = np.zeros((48, 100), np.float32)
    write_hybrid(tmp_path / "shape", "falcon-h1", weights=w)
    with pytest.raises(TinyGGMLError, match=r"'model\.layers\.0\.mamba\.out_proj\.weight' "
                                            r"\(blk\.0\.ssm_out\.weight\) has shape \[48, 100\], "
                                            r"expected \[48, 96\]"):
        convert(tmp_path / "shape", tmp_path / "o.gguf", progress=False)
    assert not (tmp_path / "o.gguf").exists()


def lfm2_config_4x(cfg):
    """The same model in transformers 4.5x's spelling of LFM2 configs: block_ff_dim, rope_theta
    at the top level, attention layers as full_attn_idxs (no layer_types)."""
    old = {k: v for k, v in cfg.items() if k not in ("rope_parameters", "layer_types", "dtype")}
    return {**old, "block_ff_dim": cfg["intermediate_size"], "torch_dtype": "float32",
            "rope_theta": cfg["rope_parameters"]["rope_theta"],
            "full_attn_idxs": [il for il, t in enumerate(cfg["layer_types"]) if t != "conv"],
            "transformers_version": "4.54.0"}


def test_lfm2_keys_and_types(tmp_path):
    """LFM2: per-layer head_count_kv, the adjusted FFN size, shortconv.l_cache, rope from
    rope_parameters; f16: shortconv.conv, norms and 1-D tensors stay F32, no output (tied).
    transformers 4's spelling of the same config (with a saved lm_head and a head_dim) gives
    the same keys plus key / value length and an output tensor, and runs to the transformers
    logits."""
    vocab, cfg = write_vocab_gguf(tmp_path), hybrid_config("lfm2")
    _, w = write_hybrid(tmp_path / "m", "lfm2", cfg, seed=2)
    convert(tmp_path / "m", tmp_path / "m.gguf", "f16", vocab_from=vocab, progress=False)
    kv, t = read_gguf(tmp_path / "m.gguf")
    want = {"block_count": 5, "context_length": 4096, "embedding_length": 48,
            "feed_forward_length": 160, "attention.head_count": 4,
            "attention.head_count_kv": [0, 2, 0, 2, 0], "rope.freq_base": 20000.0,
            "attention.layer_norm_rms_epsilon": np.float32(1e-5), "vocab_size": 264,
            "shortconv.l_cache": 3}
    assert [k[5:] for k in kv if k.startswith("lfm2.")] == list(want)
    assert {k: kv["lfm2." + k][1] for k in want} == want
    assert "output.weight" not in t and t["token_embd_norm.weight"][:2] == (Q.F32, (48,))
    assert t["blk.0.shortconv.conv.weight"][:2] == (Q.F32, (3, 48))
    assert t["blk.0.shortconv.in_proj.weight"][:2] == (Q.F16, (48, 144))
    assert t["blk.1.attn_q_norm.weight"][:2] == (Q.F32, (12,))
    for name, (typ, shape, _) in t.items():
        small = len(shape) == 1 or name.endswith(("norm.weight", "shortconv.conv.weight"))
        assert typ == (Q.F32 if small else Q.F16), name

    old = {**lfm2_config_4x(cfg), "tie_word_embeddings": False, "head_dim": 12}
    w["lm_head.weight"] = (0.3 * np.random.default_rng(4).standard_normal((264, 48))
                           ).astype(np.float32)
    write_hybrid(tmp_path / "m4", "lfm2", old, w)
    convert(tmp_path / "m4", tmp_path / "m4.gguf", vocab_from=vocab, progress=False)
    kv4, t4 = read_gguf(tmp_path / "m4.gguf")
    assert {k: kv4["lfm2." + k][1] for k in want} == want and t4["output.weight"][1] == (48, 264)
    assert kv4["lfm2.attention.key_length"][1] == kv4["lfm2.attention.value_length"][1] == 12
    toks = np.random.default_rng(5).integers(0, 264, 16)
    got = tinyggml.Model(str(tmp_path / "m4.gguf"), n_threads=2, kv_type="f32").eval(toks)
    ref = lfm2_logits(old, w, toks)
    np.testing.assert_allclose(got, ref, rtol=0, atol=3e-5 * float(np.abs(ref).max()))


def test_lfm2_config_defaults(tmp_path):
    """Keys missing from config.json take Lfm2Config's defaults, as AutoConfig gives them to
    llama.cpp (its converter wrote the same bytes for this config): FFN int(2 * 200 / 3) = 133
    rounded up to 256, L 3, context 128000, rope theta 1e6; no layer_types: attention at
    full_attn_idxs."""
    cfg = {k: v for k, v in lfm2_config_4x(hybrid_config("lfm2")).items()
           if not k.startswith(("block_", "conv_", "norm_eps", "max_position", "rope_"))}
    rng = np.random.default_rng(0)
    g = lambda *s, scale=1.0: (scale * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    w = lfm2_weights({**cfg, "layer_types": hybrid_config("lfm2")["layer_types"],
                      "conv_L_cache": 3}, g, ff=256)
    write_hybrid(tmp_path / "m", "lfm2", cfg, w)
    convert(tmp_path / "m", tmp_path / "m.gguf", vocab_from=write_vocab_gguf(tmp_path),
            progress=False)
    kv, _ = read_gguf(tmp_path / "m.gguf")
    assert [kv["lfm2." + k][1] for k in ("feed_forward_length", "shortconv.l_cache",
                                         "context_length", "rope.freq_base",
                                         "attention.head_count_kv")] == \
        [256, 3, 128000, 1e6, [0, 2, 0, 2, 0]]


@pytest.mark.parametrize("change,error", [
    ({"conv_bias": True}, r"config\.json: LFM2 with conv_bias true \(biases in the short "
                          r"convolutions\) is not supported$"),
    ({"architectures": ["Lfm2MoeForCausalLM"]},
     r"config\.json: Lfm2MoeForCausalLM: LFM2 mixture of experts \(arch lfm2moe\) is not "
     r"supported; the dense Lfm2ForCausalLM is$"),
    ({"architectures": ["Lfm2Model"]}, r"Lfm2Model: an LFM2 embedding model \(no LM head\)"),
    ({"architectures": ["Lfm2BidirectionalModel"]},
     r"Lfm2BidirectionalModel: a bidirectional LFM2 embedding model is not supported"),
    ({"is_causal": False}, r"a non-causal LFM2 \(is_causal false\) is not supported$"),
    ({"layer_types": ["conv", "sliding_attention", "conv", "full_attention", "conv"]},
     r"layer_types should name 5 layers 'conv' or 'full_attention', found "
     r"\['sliding_attention'\]$"),
    ({"layer_types": ["conv", "full_attention"]},
     r"layer_types should name 5 layers 'conv' or 'full_attention'$"),
])
def test_lfm2_refused(tmp_path, change, error):
    """What the runtime has no graph for is refused in one line, before any output."""
    cfg = {**hybrid_config("lfm2"), **change}
    write_hybrid(tmp_path / "m", "lfm2", cfg, hybrid_weights("lfm2", hybrid_config("lfm2")))
    with pytest.raises(TinyGGMLError, match=error) as e:
        convert(tmp_path / "m", tmp_path / "o.gguf", progress=False)
    assert "\n" not in str(e.value) and not (tmp_path / "o.gguf").exists()


def test_lfm2_tensor_errors(tmp_path):
    cfg = hybrid_config("lfm2")
    w = hybrid_weights("lfm2", cfg)
    w["model.layers.0.conv.in_proj.bias"] = np.zeros(144, np.float32)
    write_hybrid(tmp_path / "bias", "lfm2", cfg, w)
    with pytest.raises(TinyGGMLError, match=r"'model\.layers\.0\.conv\.in_proj\.bias' is not "
                                            r"part of a Lfm2ForCausalLM model"):
        convert(tmp_path / "bias", tmp_path / "o.gguf", progress=False)
    w = hybrid_weights("lfm2", cfg)
    del w["model.layers.3.self_attn.k_layernorm.weight"]
    w["model.layers.1.conv.out_proj.weight"] = w["model.layers.0.conv.out_proj.weight"]
    write_hybrid(tmp_path / "kind", "lfm2", cfg, w)
    with pytest.raises(TinyGGMLError, match=r"'model\.layers\.1\.conv\.out_proj\.weight' is "
                                            r"in block 1, which the config makes a layer without "
                                            r"conv weights"):
        convert(tmp_path / "kind", tmp_path / "o.gguf", progress=False)
    del w["model.layers.1.conv.out_proj.weight"]
    (tmp_path / "kind" / "model.safetensors").unlink()
    save_file(w, str(tmp_path / "kind" / "model.safetensors"))
    with pytest.raises(TinyGGMLError, match=r"missing tensor\(s\) for Lfm2ForCausalLM: "
                                            r"blk\.3\.attn_k_norm\.weight$"):
        convert(tmp_path / "kind", tmp_path / "o.gguf", progress=False)
    write_hybrid(tmp_path / "ff", "lfm2", {**cfg, "block_auto_adjust_ff_dim": False},
                 hybrid_weights("lfm2", cfg))       # saved FFN 160; the config's is now 200
    with pytest.raises(TinyGGMLError, match=r"\(blk\.0\.ffn_gate\.weight\) has shape "
                                            r"\[160, 48\], expected \[200, 48\]"):
        convert(tmp_path / "ff", tmp_path / "o.gguf", progress=False)


def qwen35_config():
    """A small Qwen3_5ForCausalLM config.json as transformers 5 writes it; 4 value heads over 2
    key heads (so the value-head tiling matters), rope over half of each 16-wide head."""
    return {"architectures": ["Qwen3_5ForCausalLM"], "model_type": "qwen3_5_text",
            "vocab_size": 264, "hidden_size": 48, "intermediate_size": 80,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "layer_types": ["linear_attention", "full_attention",
                                            "linear_attention", "linear_attention"],
            "linear_conv_kernel_dim": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 8,
            "linear_num_key_heads": 2, "linear_num_value_heads": 4, "hidden_act": "silu",
            "attention_bias": False, "rms_norm_eps": 1e-6, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                "partial_rotary_factor": 0.5, "mrope_section": [2, 1, 1]},
            "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
            "dtype": "float32", "transformers_version": "5.24.0"}


def qwen35_weights(cfg, seed=0):
    """Qwen3_5ForCausalLM's names and shapes; the RMS norm weights zero-centred."""
    rng = np.random.default_rng(seed)
    g = lambda *s, scale=1.0: (scale * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    e, v, ff, hd = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"], cfg["head_dim"]
    nk, nv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
    dk, dv = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"]
    ch = 2 * nk * dk + nv * dv
    nq, nkv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    w = {"model.embed_tokens.weight": g(v, e, scale=0.7), "model.norm.weight": g(e, scale=0.2)}
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = g(v, e, scale=0.3)
    for il, kind in enumerate(cfg["layer_types"]):
        p = f"model.layers.{il}."
        w.update({p + "input_layernorm.weight": g(e, scale=0.2),
                  p + "post_attention_layernorm.weight": g(e, scale=0.2),
                  p + "mlp.gate_proj.weight": g(ff, e, scale=e ** -0.5),
                  p + "mlp.up_proj.weight": g(ff, e, scale=e ** -0.5),
                  p + "mlp.down_proj.weight": g(e, ff, scale=ff ** -0.5)})
        if kind == "linear_attention":
            a = p + "linear_attn."
            w.update({a + "in_proj_qkv.weight": g(ch, e, scale=e ** -0.5),
                      a + "in_proj_z.weight": g(nv * dv, e, scale=e ** -0.5),
                      a + "in_proj_a.weight": g(nv, e, scale=e ** -0.5),
                      a + "in_proj_b.weight": g(nv, e, scale=e ** -0.5),
                      a + "conv1d.weight": g(ch, 1, cfg["linear_conv_kernel_dim"], scale=0.4),
                      a + "dt_bias": g(nv, scale=0.5),
                      a + "A_log": np.log(rng.uniform(0.5, 8, nv)).astype(np.float32),
                      a + "norm.weight": 1 + g(dv, scale=0.2),
                      a + "out_proj.weight": g(e, nv * dv, scale=(nv * dv) ** -0.5)})
        else:
            a = p + "self_attn."
            w.update({a + "q_proj.weight": g(2 * nq, e, scale=e ** -0.5),
                      a + "k_proj.weight": g(nkv, e, scale=e ** -0.5),
                      a + "v_proj.weight": g(nkv, e, scale=e ** -0.5),
                      a + "o_proj.weight": g(e, nq, scale=nq ** -0.5),
                      a + "q_norm.weight": g(hd, scale=0.2), a + "k_norm.weight": g(hd, scale=0.2)})
    return w


def qwen35_logits(cfg, w, tokens):
    """float64 logits after transformers' modeling_qwen3_5, tokens fed one by one. RMS norms
    zero-centred (x * (1 + w)), but the gated one per value head: w * norm(o) * silu(z).
    Linear attention: in_proj_qkv -> depthwise causal conv (K taps, no bias) + SiLU -> q, k
    {n_k, d_k}, v {n_v, d_v}; q, k L2-normed (eps 1e-6) and repeat_interleave'd to the value
    heads (value head h reads key head h // (n_v / n_k)), q / sqrt(d_k); decay
    exp(-exp(A_log) * softplus(a + dt_bias)), beta = sigmoid(b); the delta rule on a state
    {n_v, d_k, d_v}. Attention: q_proj per head [query; gate], q_norm / k_norm, rope
    (rotate_half) over the first head_dim * partial_rotary_factor dims (the mrope sections all
    see the text position), repeat_kv, 1 / sqrt(head_dim), output * sigmoid(gate)."""
    f = {k: v.astype(np.float64) for k, v in w.items()}
    eps, hd, K = cfg["rms_norm_eps"], cfg["head_dim"], cfg["linear_conv_kernel_dim"]
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    nk, nv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
    dk, dv = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"]
    rp = cfg["rope_parameters"]
    n_rot, theta = int(hd * rp["partial_rotary_factor"]), rp["rope_theta"]
    norm = lambda x, wt: rmsnorm(x, 1 + wt, eps)                       # noqa: E731
    sigmoid = lambda x: 1 / (1 + np.exp(-x))                           # noqa: E731
    l2 = lambda x: x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-6)  # noqa: E731
    emb = f["model.embed_tokens.weight"]
    lm_head = f.get("lm_head.weight", emb)
    states = [{"conv": np.zeros((K - 1, 2 * nk * dk + nv * dv)), "S": np.zeros((nv, dk, dv)),
               "k": [], "v": []} for _ in cfg["layer_types"]]

    def linear_attention(x, p, st):
        a = p + "linear_attn."
        win = np.vstack([st["conv"], f[a + "in_proj_qkv.weight"] @ x])    # inputs t - K + 1 .. t
        st["conv"] = win[1:]
        c = silu(sum(f[a + "conv1d.weight"][:, 0, j] * win[j] for j in range(K)))
        q, k, v = np.split(c, [nk * dk, 2 * nk * dk])
        q = np.repeat(l2(q.reshape(nk, dk)), nv // nk, axis=0) / np.sqrt(dk)
        k = np.repeat(l2(k.reshape(nk, dk)), nv // nk, axis=0)
        v = v.reshape(nv, dv)
        beta = sigmoid(f[a + "in_proj_b.weight"] @ x)
        decay = np.exp(-np.exp(f[a + "A_log"])
                       * np.log1p(np.exp(f[a + "in_proj_a.weight"] @ x + f[a + "dt_bias"])))
        S = st["S"] * decay[:, None, None]
        delta = (v - np.einsum("hkv,hk->hv", S, k)) * beta[:, None]
        S = st["S"] = S + k[:, :, None] * delta[:, None, :]
        o = np.einsum("hkv,hk->hv", S, q)
        z = (f[a + "in_proj_z.weight"] @ x).reshape(nv, dv)
        o = rmsnorm(o, f[a + "norm.weight"], eps) * silu(z)
        return f[a + "out_proj.weight"] @ o.reshape(-1)

    def attention(x, p, st):
        a = p + "self_attn."
        qg = (f[a + "q_proj.weight"] @ x).reshape(nq, 2 * hd)
        q, gate = norm(qg[:, :hd], f[a + "q_norm.weight"]), qg[:, hd:].reshape(-1)
        k = norm((f[a + "k_proj.weight"] @ x).reshape(nkv, hd), f[a + "k_norm.weight"])
        v = (f[a + "v_proj.weight"] @ x).reshape(nkv, hd)
        rope(q, len(st["k"]), n_rot, True, theta)
        rope(k, len(st["k"]), n_rot, True, theta)
        o = _cached_attention(q, k, v, st, hd ** -0.5)
        return f[a + "o_proj.weight"] @ (o.reshape(-1) * sigmoid(gate))

    logits = []
    for tok in tokens:
        x = emb[tok]
        for il, kind in enumerate(cfg["layer_types"]):
            p = f"model.layers.{il}."
            h = norm(x, f[p + "input_layernorm.weight"])
            x = x + (linear_attention(h, p, states[il]) if kind == "linear_attention"
                     else attention(h, p, states[il]))
            h = norm(x, f[p + "post_attention_layernorm.weight"])
            m = p + "mlp."
            x = x + f[m + "down_proj.weight"] @ (silu(f[m + "gate_proj.weight"] @ h)
                                                 * (f[m + "up_proj.weight"] @ h))
        logits.append(norm(x, f["model.norm.weight"]) @ lm_head.T)
    return np.array(logits)


def test_qwen35_logits_follow_transformers(tmp_path):
    """A converted random Qwen3.5 checkpoint runs in tinyggml to qwen35_logits (value heads
    tiled, norms + 1, A, gate halves of q_proj mean what transformers makes of them); keys as
    llama.cpp's Qwen3_5TextModel writes them; f16: norms, conv, A, dt bias stay F32."""
    cfg = qwen35_config()
    _, w = write_hybrid(tmp_path / "m", "qwen35", cfg, qwen35_weights(cfg, seed=7))
    out = tmp_path / "m.gguf"
    s = convert(tmp_path / "m", out, vocab_from=write_vocab_gguf(tmp_path), progress=False)
    assert s["arch"] == "qwen35" and s["n_vocab"] == 264
    toks = np.random.default_rng(3).integers(0, 264, 24)
    want = qwen35_logits(cfg, w, toks)
    got = tinyggml.Model(str(out), n_threads=2, kv_type="f32").eval(toks)
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=3e-5 * float(np.abs(want).max()))

    convert(tmp_path / "m", tmp_path / "h.gguf", "f16", vocab_from=write_vocab_gguf(tmp_path),
            progress=False)
    kv, t = read_gguf(tmp_path / "h.gguf")
    want_keys = {"block_count": 4, "context_length": 4096, "embedding_length": 48,
                 "feed_forward_length": 80, "attention.head_count": 4,
                 "attention.head_count_kv": 2, "rope.dimension_sections": [2, 1, 1, 0],
                 "rope.freq_base": 10000.0, "attention.layer_norm_rms_epsilon": np.float32(1e-6),
                 "attention.key_length": 16, "attention.value_length": 16,
                 "ssm.conv_kernel": 4, "ssm.state_size": 8, "ssm.group_count": 2,
                 "ssm.time_step_rank": 4, "ssm.inner_size": 32,
                 "attention.recurrent_layers": [True, False, True, True],
                 "full_attention_interval": 4, "rope.dimension_count": 8}
    assert [k[7:] for k in kv if k.startswith("qwen35.")] == list(want_keys)
    assert {k: kv["qwen35." + k][1] for k in want_keys} == want_keys
    assert t["blk.0.ssm_conv1d.weight"][:2] == (Q.F32, (4, 64))
    assert t["blk.0.ssm_a"][:2] == (Q.F32, (4,)) and t["blk.0.ssm_norm.weight"][1] == (8,)
    assert t["blk.1.attn_q.weight"][:2] == (Q.F16, (48, 128))
    for name, (typ, shape, _) in t.items():
        small = len(shape) == 1 or name.endswith(("norm.weight", "ssm_conv1d.weight", "ssm_a"))
        assert typ == (Q.F32 if small else Q.F16), name


def test_qwen35_multimodal_layout(tmp_path):
    """Qwen3_5ForConditionalGeneration: the text config under text_config, the text model under
    model.language_model; the vision encoder and the multi-token-prediction block are left out.
    Same bytes as the Qwen3_5ForCausalLM checkpoint."""
    cfg = {**qwen35_config(), "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}
    w = qwen35_weights(cfg)
    write_hybrid(tmp_path / "lm", "qwen35", cfg, w)
    mm = {"architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5",
          "text_config": {k: v for k, v in cfg.items() if k != "architectures"},
          "vision_config": {"depth": 1, "hidden_size": 16}, "tie_word_embeddings": False}
    mw = {k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k: v
          for k, v in w.items()}
    mw.update({"model.visual.patch_embed.proj.weight": np.ones((16, 3), np.float32),
               "mtp.fc.weight": np.ones((48, 96), np.float32),
               "mtp.layers.0.input_layernorm.weight": np.ones(48, np.float32)})
    write_hybrid(tmp_path / "mm", "qwen35", mm, mw)
    vocab = write_vocab_gguf(tmp_path)
    for d in ("lm", "mm"):
        convert(tmp_path / d, tmp_path / f"{d}.gguf", vocab_from=vocab, progress=False, name="q")
    assert (tmp_path / "lm.gguf").read_bytes() == (tmp_path / "mm.gguf").read_bytes()
    kv, _ = read_gguf(tmp_path / "lm.gguf")     # no mrope_section, partial_rotary_factor: defaults
    assert kv["qwen35.rope.dimension_sections"][1] == [11, 11, 10, 0]
    assert kv["qwen35.rope.dimension_count"][1] == 4


@pytest.mark.parametrize("change,error", [
    ({"num_experts": 8}, r"config\.json: Qwen3\.5 with num_experts 8 \(mixture of experts\) is "
                         r"not supported; the dense variants are$"),
    ({"architectures": ["Qwen3_5MoeForCausalLM"]},
     r"Qwen3_5MoeForCausalLM: Qwen3\.5 mixture of experts \(arch qwen35moe\) is not supported"),
    ({"architectures": ["Qwen3NextForCausalLM"]}, r"Qwen3-Next \(arch qwen3next\) is not"),
    ({"attention_bias": True}, r"Qwen3\.5 with attention_bias true \(q/k/v/o biases\) is not "
                               r"supported$"),
    ({"linear_value_head_dim": 16}, r"linear_key_head_dim 8 != linear_value_head_dim 16 is not "
                                    r"supported"),
    ({"linear_num_value_heads": 3}, r"linear_num_value_heads 3 is not a multiple of "
                                    r"linear_num_key_heads 2$"),
    ({"hidden_act": "gelu"}, r"Qwen3\.5 with hidden_act 'gelu' is not supported"),
    ({"layer_types": ["linear_attention", "sliding_attention", "full_attention",
                      "linear_attention"]},
     r"layer_types should name 4 layers 'linear_attention' or 'full_attention', found "
     r"\['sliding_attention'\]$"),
])
def test_qwen35_refused(tmp_path, change, error):
    """What the runtime has no graph for is refused in one line, before any output."""
    write_hybrid(tmp_path / "m", "qwen35", {**qwen35_config(), **change},
                 qwen35_weights(qwen35_config()))
    with pytest.raises(TinyGGMLError, match=error) as e:
        convert(tmp_path / "m", tmp_path / "o.gguf", progress=False)
    assert "\n" not in str(e.value) and not (tmp_path / "o.gguf").exists()


def test_qwen35_tensor_errors(tmp_path):
    cfg = qwen35_config()
    w = qwen35_weights(cfg)
    del w["model.layers.2.linear_attn.A_log"], w["model.layers.1.self_attn.q_norm.weight"]
    write_hybrid(tmp_path / "missing", "qwen35", cfg, w)
    with pytest.raises(TinyGGMLError, match=r"missing tensor\(s\) for Qwen3_5ForCausalLM: "
                                            r"blk\.1\.attn_q_norm\.weight, blk\.2\.ssm_a$"):
        convert(tmp_path / "missing", tmp_path / "o.gguf", progress=False)
    w = qwen35_weights(cfg)
    w["model.layers.1.self_attn.q_proj.weight"] = w["model.layers.1.self_attn.q_proj.weight"][:64]
    write_hybrid(tmp_path / "gate", "qwen35", cfg, w)       # no output-gate half
    with pytest.raises(TinyGGMLError, match=r"\(blk\.1\.attn_q\.weight\) has shape \[64, 48\], "
                                            r"expected \[128, 48\]"):
        convert(tmp_path / "gate", tmp_path / "o.gguf", progress=False)
    w = qwen35_weights(cfg)
    w["model.layers.1.linear_attn.A_log"] = w["model.layers.0.linear_attn.A_log"]
    write_hybrid(tmp_path / "kind", "qwen35", cfg, w)
    with pytest.raises(TinyGGMLError, match=r"'model\.layers\.1\.linear_attn\.A_log' is in block "
                                            r"1, which the config makes a layer without ssm"):
        convert(tmp_path / "kind", tmp_path / "o.gguf", progress=False)


# ---- errors ---------------------------------------------------------------------------------

def test_unknown_architecture(tmp_path):
    write_transformers_mamba2(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TinyGGMLError, match="LlamaForCausalLM.*not supported"):
        convert(tmp_path / "m", tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists()


def test_missing_tensor_and_shape_mismatch(tmp_path):
    w = mamba2_weights(np.random.default_rng(0), "backbone.", "dt_bias")
    w.pop("backbone.layers.1.mixer.D")
    write_transformers_mamba2(tmp_path / "missing", weights=w)
    with pytest.raises(TinyGGMLError, match=r"missing tensor.*blk\.1\.ssm_d"):
        convert(tmp_path / "missing", tmp_path / "out.gguf", progress=False)
    w = mamba2_weights(np.random.default_rng(0), "backbone.", "dt_bias")
    w["backbone.layers.0.mixer.out_proj.weight"] = np.zeros((64, 100), np.float32)
    write_transformers_mamba2(tmp_path / "shape", weights=w)
    with pytest.raises(TinyGGMLError, match=r"model\.safetensors: tensor "
                       r"'backbone\.layers\.0\.mixer\.out_proj\.weight'.*\[64, 100\], "
                       r"expected \[64, 128\]"):
        convert(tmp_path / "shape", tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists()


def test_no_tokenizer(tmp_path):
    write_transformers_mamba2(tmp_path / "m")
    with pytest.raises(TinyGGMLError, match="no tokenizer.*--vocab-from"):
        convert(tmp_path / "m", tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists()


def test_unrecognized_bpe_pretokenizer(tmp_path):
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
          "normalizer": None, "post_processor": None, "decoder": None,
          "pre_tokenizer": {"type": "Whitespace"},
          "model": {"type": "BPE", "vocab": {c: i for i, c in enumerate("abcdefgh")},
                    "merges": []}}
    write_transformers_mamba2(tmp_path / "m", tokenizer={"tokenizer.json": json.dumps(tj)
                                                         .encode()})
    with pytest.raises(TinyGGMLError, match="pre-tokenizer not recognized"):
        convert(tmp_path / "m", tmp_path / "out.gguf", progress=False)


def test_no_partial_output(tmp_path, spm_model, monkeypatch):
    """A failure while writing leaves neither the output nor a temporary file, and an existing
    output file untouched."""
    from tinyggml.tools import convert as conv
    write_state_spaces_mamba1(tmp_path / "m", spm_model, tied=True)
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    out.write_bytes(b"old")
    load, calls = conv.SafeTensors.load, []

    def failing_load(self, name):
        calls.append(name)
        if len(calls) == 5:
            raise OSError("disk on fire")
        return load(self, name)
    monkeypatch.setattr(conv.SafeTensors, "load", failing_load)
    with pytest.raises(OSError, match="disk on fire"):
        convert(tmp_path / "m", out, progress=False)
    assert [p.name for p in out.parent.iterdir()] == ["m.gguf"] and out.read_bytes() == b"old"
    monkeypatch.setattr(conv.SafeTensors, "load", load)
    convert(tmp_path / "m", out, progress=False)
    assert [p.name for p in out.parent.iterdir()] == ["m.gguf"] and out.stat().st_size > 1000


def test_bad_outtype_and_folder(tmp_path):
    with pytest.raises(TinyGGMLError, match="outtype 'q4_0'"):
        convert(tmp_path, tmp_path / "o.gguf", "q4_0")
    with pytest.raises(TinyGGMLError, match="no config.json"):
        convert(tmp_path, tmp_path / "o.gguf")
    with pytest.raises(TinyGGMLError, match="not a checkpoint folder"):
        convert(tmp_path / "nope", tmp_path / "o.gguf")


def test_check_text_is_llamacpps():
    """The hash of its tokenization names the pre-tokenizer, so the text must stay exact (the
    gpt-neox test above checks it against llama.cpp's hash)."""
    from hashlib import sha256
    assert (sha256(CHKTXT.encode()).hexdigest()
            == "a36179c1e2b1cfcfbfad1dc779addad2ffc778201e4cf0d538bddeafa2c526da")
