#!/usr/bin/env python3
"""Regenerate the hybrid (attention + Mamba-2) conformance fixtures in tests/fixtures/hybrid/.

DEV-ONLY: needs torch + transformers (never imported by the tinyggml package), llama-cpp-python
0.3.36 (its quantizer and its runtime, used as an independent check) and the llama.cpp source
vendored in llama-cpp-python 0.3.36's sdist (its convert_hf_to_gguf.py + conversion/ + gguf-py).

For each architecture (granitehybrid, nemotron_h, falcon-h1, lfm2) it
  1. builds a tiny random transformers model (seeded) and perturbs every parameter (seeded),
  2. saves it as a HF checkpoint + a small sentencepiece tokenizer.model,
  3. converts it with llama.cpp's own converter to <name>-f32.gguf and <name>-f16.gguf,
  4. quantizes the f32 gguf with llama.cpp's quantizer (through llama_cpp ctypes) to q8_0 / q4_0,
  5. writes <name>.ref.npz: float64 transformers logits (every internal float32 upcast redirected
     to float64 and checked with a TorchDispatchMode that no non-float64 float tensor appears),
  6. writes <name>-<f16|q8_0|q4_0>.deqref.npz: the same computed on a copy of the model whose
     weights are the values the f16/quantized gguf really holds (mapped back through the
     converter's transforms: A_log, reshapes, q/k permutes, folded multipliers, split gate/up),
  7. records llama.cpp's own max abs logit error against those references in
     llamacpp_agreement.json.

Usage:
    . /work/venv/bin/activate
    flock /work/cpu.lock python tools/make_hybrid_fixtures.py [--only granitehybrid] [--out DIR]

The converter is run with transformers 4.57.6 (the version pinned in the vendored
requirements/requirements-convert_hf_to_gguf.txt) installed with `pip install --target` into
--converter-site (default /tmp/tinyggml-convert-site; installed on first use), because
transformers 5.x rewrites legacy layer_types ("mamba"/"attention" -> "linear_attention"/
"full_attention") which this converter commit does not recognise.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LLAMA = Path("/work/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp")
DEFAULT_SPM = Path("/work/shared/fixtures/tokenizers/spm4000.model")
LLAMA_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
CONVERTER_TRANSFORMERS = "transformers==4.57.6"

VOCAB = 320          # first 320 pieces of spm4000 (3 specials + 256 byte pieces + 61 merges)
N_GREEDY = 16
PROMPT_TEXT = "Once upon a time, the little state space model read the whole prompt at once and then"
MULTI0_TEXT = "The quick brown fox jumps over"
MULTI1_TEXT = "In a hole in the ground there lived a hobbit, not a nasty"

# ----------------------------------------------------------------------------- model configs


def granite_config():
    from transformers import GraniteMoeHybridConfig
    return GraniteMoeHybridConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, shared_intermediate_size=96,
        num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2,
        layer_types=["mamba", "attention", "mamba", "mamba", "attention"],
        num_local_experts=0, num_experts_per_tok=0,
        mamba_n_heads=8, mamba_n_groups=2, mamba_d_state=16, mamba_d_head=16, mamba_d_conv=4,
        mamba_expand=2, mamba_chunk_size=256, mamba_conv_bias=True, mamba_proj_bias=False,
        embedding_multiplier=3.0, residual_multiplier=0.6, attention_multiplier=0.2,
        logits_scaling=0.4, rms_norm_eps=1e-5, position_embedding_type=None,
        tie_word_embeddings=True, initializer_range=0.15, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


def nemotron_config():
    from transformers import NemotronHConfig
    return NemotronHConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, mlp_hidden_act="relu2",
        hybrid_override_pattern="M*M-*-", num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        ssm_state_size=16, mamba_num_heads=8, mamba_head_dim=16, n_groups=2, conv_kernel=4,
        expand=2, chunk_size=256, use_conv_bias=True, mamba_proj_bias=False,
        layer_norm_epsilon=1e-5, tie_word_embeddings=False, initializer_range=0.15,
        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


def falcon_config():
    from transformers import FalconH1Config
    return FalconH1Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        mamba_d_ssm=128, mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16,
        mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=256, mamba_conv_bias=True,
        mamba_proj_bias=False, mamba_rms_norm=True, mamba_norm_before_gate=False,
        rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
        embedding_multiplier=2.5, lm_head_multiplier=0.7, mlp_multipliers=[1.3, 0.8],
        key_multiplier=0.6, attention_in_multiplier=1.2, attention_out_multiplier=0.9,
        ssm_multipliers=[0.8, 1.25, 0.7, 1.4, 1.1], ssm_in_multiplier=1.15, ssm_out_multiplier=0.85,
        rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.15,
        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


def lfm2_config():
    from transformers import Lfm2Config
    return Lfm2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, block_auto_adjust_ff_dim=False,
        num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2,
        layer_types=["conv", "full_attention", "conv", "conv", "full_attention"], conv_L_cache=3,
        conv_bias=False, norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 50000.0},
        tie_word_embeddings=True, initializer_range=0.15, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


def qwen35_config():
    from transformers import Qwen3_5TextConfig
    return Qwen3_5TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=5,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        layer_types=["linear_attention", "full_attention", "linear_attention", "linear_attention",
                     "full_attention"],
        linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16,
        linear_num_key_heads=2, linear_num_value_heads=4,
        rope_parameters={"rope_type": "default", "rope_theta": 20000.0, "partial_rotary_factor": 0.5,
                         "mrope_section": [4, 2, 2]},
        rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.15,
        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


ARCHS = {
    # name: (llama.cpp arch, config fn, HF class name, modeling module)
    "granitehybrid": ("granitehybrid", granite_config, "GraniteMoeHybridForCausalLM",
                      "transformers.models.granitemoehybrid.modeling_granitemoehybrid"),
    "nemotron_h": ("nemotron_h", nemotron_config, "NemotronHForCausalLM",
                   "transformers.models.nemotron_h.modeling_nemotron_h"),
    "falcon-h1": ("falcon-h1", falcon_config, "FalconH1ForCausalLM",
                  "transformers.models.falcon_h1.modeling_falcon_h1"),
    "lfm2": ("lfm2", lfm2_config, "Lfm2ForCausalLM", "transformers.models.lfm2.modeling_lfm2"),
    "qwen35": ("qwen35", qwen35_config, "Qwen3_5ForCausalLM",
               "transformers.models.qwen3_5.modeling_qwen3_5"),
}
SEEDS = {"granitehybrid": 1000, "nemotron_h": 2000, "falcon-h1": 3000, "lfm2": 4000,
         "qwen35": 5000}                                                         # first seed tried
EMB_STD = {"granitehybrid": 0.15, "nemotron_h": 0.3, "falcon-h1": 0.3, "lfm2": 0.3,
           "qwen35": 0.3}                                                        # std of the (re-drawn) embeddings
LM_STD = 0.5                                                              # std of an untied lm_head

# ----------------------------------------------------------------------------- float64 machinery


class _Torch64(types.ModuleType):
    """Stand-in for the `torch` global of a modeling module: float32 / float mean float64."""

    def __init__(self, torch):
        super().__init__("torch")
        self._t = torch

    def __getattr__(self, k):
        if k in ("float32", "float"):
            return self._t.float64
        return getattr(self._t, k)


@contextlib.contextmanager
def float64_everywhere(modeling_modules):
    import torch
    proxy = _Torch64(torch)
    saved = [(m, m.torch) for m in modeling_modules]
    orig_float = torch.Tensor.float
    for m in modeling_modules:
        m.torch = proxy
    torch.Tensor.float = lambda self, *a, **k: self.to(torch.float64)
    try:
        yield
    finally:
        torch.Tensor.float = orig_float
        for m, t in saved:
            m.torch = t


def _dispatch_checker():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class NoLowPrecision(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bad = set()

        def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64:
                    self.bad.add(f"{func}->{t.dtype}")
            return out
    return NoLowPrecision()


def make_f64(model, modeling_modules):
    """Deep copy in float64; recompute rotary inv_freq in float64."""
    import copy
    import torch
    m = copy.deepcopy(model).double().eval()
    with float64_everywhere(modeling_modules):
        for mod in m.modules():
            if hasattr(mod, "inv_freq") and hasattr(mod, "compute_default_rope_parameters"):
                assert mod.rope_type == "default"
                inv, _ = mod.compute_default_rope_parameters(mod.config)
                mod.inv_freq = inv.to(torch.float64)
                mod.original_inv_freq = inv.to(torch.float64).clone()
    return m


def forward_logits(model, tokens, f64, modeling_modules):
    import torch
    ids = torch.tensor([list(tokens)], dtype=torch.long)
    with torch.no_grad():
        if f64:
            chk = _dispatch_checker()
            with float64_everywhere(modeling_modules), chk:
                out = model(input_ids=ids, use_cache=False, logits_to_keep=0)
            if chk.bad:
                raise RuntimeError(f"non-float64 tensors in the float64 reference: {sorted(chk.bad)[:10]}")
            lg = out.logits[0]
            assert lg.dtype == torch.float64
        else:
            lg = model(input_ids=ids, use_cache=False, logits_to_keep=0).logits[0]
    assert lg.shape[0] == len(tokens), lg.shape
    return lg.double().numpy()


def reference(model, prompts, modeling_modules, m64=None):
    """float64 reference: prompt logits, greedy tokens/logits (no cache: a full forward per step).
    `model` is the float32 transformers model; `m64` (default: its float64 copy) is run for the
    reference, and a float32 copy of m64 for gap_f32_f64_max_abs."""
    import copy
    if m64 is None:
        m64 = make_f64(model, modeling_modules)
    out = {}
    prompt = prompts["tokens"]
    out["tokens"] = np.asarray(prompt, np.int32)
    out["logits"] = forward_logits(m64, prompt, True, modeling_modules)
    seq = list(prompt)
    g_tok, g_log = [], []
    for i in range(N_GREEDY):
        lg = forward_logits(m64, seq, True, modeling_modules)[-1]
        t = int(np.argmax(lg))
        g_tok.append(t)
        g_log.append(lg)
        seq.append(t)
    out["greedy_tokens"] = np.asarray(g_tok, np.int32)
    out["greedy_logits"] = np.stack(g_log)
    for k in ("multi0", "multi1"):
        out[f"{k}_tokens"] = np.asarray(prompts[k], np.int32)
        out[f"{k}_logits"] = forward_logits(m64, prompts[k], True, modeling_modules)
    # float32 transformers vs float64 gap over prompt + greedy steps (fed the f64 greedy tokens)
    m32 = copy.deepcopy(m64).float().eval()
    gap = np.abs(forward_logits(m32, prompt, False, modeling_modules) - out["logits"]).max()
    seq = list(prompt)
    for i in range(N_GREEDY):
        lg = forward_logits(m32, seq, False, modeling_modules)[-1]
        gap = max(gap, np.abs(lg - out["greedy_logits"][i]).max())
        seq.append(int(out["greedy_tokens"][i]))
    out["gap_f32_f64_max_abs"] = np.float64(gap)
    return out


def greedy_quality(ref):
    gl = ref["greedy_logits"]
    s = np.sort(gl, axis=1)
    margins = s[:, -1] - s[:, -2]
    return len(set(ref["greedy_tokens"].tolist())), float(margins.min())

# ----------------------------------------------------------------------------- perturbation


def perturb(model, seed, emb_std=1.0, lm_std=0.5):
    """Move every parameter off its HF init so a runtime that skips one moves the logits."""
    import torch
    g = torch.Generator().manual_seed(seed)

    def n(shape):
        return torch.randn(shape, generator=g, dtype=torch.float64)

    def u(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)

    done = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            shp = p.shape
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("A_log"):
                new = torch.log(u(shp, 1.0, 16.0))
            elif leaf == "D":
                new = u(shp, 0.5, 1.5)
            elif name.endswith("dt_bias"):
                new = p.double() + 0.2 * n(shp)
            elif "conv1d.bias" in name:
                new = 0.2 * n(shp)
            elif "norm" in name and leaf == "weight":     # around the init: 1, or 0 when the
                new = (0.0 if not p.any() else 1.0) + 0.3 * n(shp)   # model adds 1 (Qwen3.5)
            elif leaf == "bias":
                new = p.double() + 0.2 * n(shp)
            elif name == "lm_head.weight":
                new = lm_std * n(shp)
            elif "embed" in name:
                new = emb_std * n(shp)
            elif "conv1d.weight" in name or "conv.conv.weight" in name:
                new = p.double() * (1.0 + 0.2 * n(shp))
            elif p.dim() == 2:
                new = p.double() * (1.0 + 0.1 * n(shp))   # keep HF's N(0, initializer_range) scale
            else:
                raise RuntimeError(f"no perturbation rule for {name} {tuple(shp)}")
            p.copy_(new.to(p.dtype))
            done.append(name)
    return done

# ----------------------------------------------------------------------------- tokenizer


def small_spm(src: Path, dst: Path):
    from sentencepiece import sentencepiece_model_pb2 as pb
    m = pb.ModelProto()
    m.ParseFromString(src.read_bytes())
    del m.pieces[VOCAB:]
    m.trainer_spec.vocab_size = VOCAB
    dst.write_bytes(m.SerializeToString())


def make_prompts(spm_path: Path):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    assert sp.get_piece_size() == VOCAB

    def enc(text, n):
        ids = [1] + sp.encode(text)
        assert len(ids) >= n, (text, len(ids))
        return ids[:n]
    return {"tokens": enc(PROMPT_TEXT, 22), "multi0": enc(MULTI0_TEXT, 8), "multi1": enc(MULTI1_TEXT, 13)}

# ----------------------------------------------------------------------------- HF checkpoint


def save_checkpoint(model, arch, hf_dir: Path, spm_path: Path):
    model.save_pretrained(hf_dir, safe_serialization=True)
    cfg_path = hf_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if arch == "granitehybrid":
        # legacy layer type names, as in the real ibm-granite checkpoints; transformers 5 remaps
        # them back on load and the converter (transformers 4.57) keeps them
        remap = {"linear_attention": "mamba", "full_attention": "attention"}
        cfg["layer_types"] = [remap.get(t, t) for t in cfg["layer_types"]]
    elif arch == "nemotron_h":
        # legacy hybrid_override_pattern string, as in nvidia/Nemotron-H-*: the converter reads a
        # list-valued layers_block_type's dense MLP layers as non-MLP, and MoE keys (which
        # transformers 5 always writes) switch it to nemotron_h_moe
        inv = {"linear_attention": "M", "full_attention": "*", "mlp": "-", "moe": "E"}
        cfg["hybrid_override_pattern"] = "".join(inv[t] for t in cfg.pop("layers_block_type"))
        cfg["num_hidden_layers"] = len(cfg["hybrid_override_pattern"])
        for k in ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
                  "moe_shared_expert_intermediate_size", "n_shared_experts", "moe_latent_size",
                  "moe_shared_expert_overlap", "routed_scaling_factor", "n_group", "topk_group",
                  "norm_topk_prob", "mtp_layers_block_type", "num_nextn_predict_layers"):
            cfg.pop(k, None)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    shutil.copy(spm_path, hf_dir / "tokenizer.model")

# ----------------------------------------------------------------------------- converter + quantizer

_CONVERT_WRAPPER = r'''
import sys
llama_dir, gguf_py = sys.argv[1], sys.argv[2]
sys.path.insert(0, llama_dir)
sys.path.insert(0, gguf_py)
import gguf
assert gguf.__file__.startswith(gguf_py), gguf.__file__
import convert_hf_to_gguf as C
from conversion.mamba import Mamba2Model
import conversion.falcon_h1 as F
import conversion.nemotron as N
import conversion.lfm2 as L
import conversion.qwen as Q

# The ONLY override: falcon-h1, nemotron_h, lfm2 and qwen35 vocab steps need a gpt2/BPE tokenizer.json whose
# pre-tokenizer hash llama.cpp knows; use llama.cpp's own sentencepiece vocab writer instead.
def _spm_vocab(self):
    self.hparams["pad_vocab_size_multiple"] = 8
    Mamba2Model.set_vocab(self)          # -> TextModel._set_vocab_sentencepiece (tokenizer.model)
F.FalconH1Model.set_vocab = _spm_vocab
N.NemotronHModel.set_vocab = _spm_vocab
L.LFM2Model.set_vocab = _spm_vocab
Q.Qwen3_5TextModel.set_vocab = _spm_vocab
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[3:]
C.main()
'''


def ensure_converter_site(site: Path):
    if (site / "transformers" / "__init__.py").is_file():
        return
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(site),
                           CONVERTER_TRANSFORMERS])


def convert(llama_dir: Path, site: Path, hf_dir: Path, out: Path, outtype: str, work: Path,
            extra=()):
    wrapper = work / "convert_wrapper.py"
    wrapper.write_text(_CONVERT_WRAPPER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(llama_dir / "gguf-py"), str(site)])
    cmd = [sys.executable, str(wrapper), str(llama_dir), str(llama_dir / "gguf-py"),
           str(hf_dir), "--outfile", str(out), "--outtype", outtype, *extra]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (work / f"convert-{out.stem}.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-8000:])
        raise RuntimeError(f"converter failed for {out}")
    return r.stderr


def quantize(src: Path, dst: Path, ftype: int):
    import llama_cpp
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {dst}, ftype={ftype}) returned {rc}")

# ----------------------------------------------------------------------------- GGUF -> HF mapping


def _unpermute(w, n_head):
    """Inverse of the converter's LlamaModel.permute (rope row interleave)."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_to_hf(arch, cfg, name, arr):
    """Map one GGUF tensor (numpy, already dequantized, numpy shape = reversed ggml ne) back to
    transformers parameter space. Returns list of (hf_param, row_slice_or_None, float64 array)."""
    a = arr.astype(np.float64)
    if name.startswith("blk."):
        _, i, rest = name.split(".", 2)
        i = int(i)
    else:
        i, rest = None, name
    if arch == "granitehybrid":
        L = f"model.layers.{i}."
        top = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
               "output.weight": "lm_head.weight"}
        per = {"attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
               "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
               "ffn_down.weight": "shared_mlp.output_linear.weight", "ssm_in.weight": "mamba.in_proj.weight",
               "ssm_out.weight": "mamba.out_proj.weight", "ssm_conv1d.weight": "mamba.conv1d.weight",
               "ssm_conv1d.bias": "mamba.conv1d.bias", "ssm_dt.bias": "mamba.dt_bias", "ssm_d": "mamba.D",
               "ssm_norm.weight": "mamba.norm.weight"}
        if i is None:
            return [(top[rest], None, a)]
        if rest == "attn_q.weight":
            return [(L + "self_attn.q_proj.weight", None, _unpermute(a, cfg.num_attention_heads))]
        if rest == "attn_k.weight":
            return [(L + "self_attn.k_proj.weight", None, _unpermute(a, cfg.num_key_value_heads))]
        ff = cfg.shared_intermediate_size
        if rest == "ffn_gate.weight":
            return [(L + "shared_mlp.input_linear.weight", slice(0, ff), a)]
        if rest == "ffn_up.weight":
            return [(L + "shared_mlp.input_linear.weight", slice(ff, 2 * ff), a)]
        if rest == "ssm_a":
            return [(L + "mamba.A_log", None, np.log(-a))]
        return [(L + per[rest], None, a)]
    if arch == "nemotron_h":
        L = f"model.layers.{i}."
        top = {"token_embd.weight": "model.embeddings.weight", "output_norm.weight": "model.norm_f.weight",
               "output.weight": "lm_head.weight"}
        per = {"attn_norm.weight": "norm.weight", "attn_v.weight": "mixer.v_proj.weight",
               "attn_output.weight": "mixer.o_proj.weight", "ffn_up.weight": "mixer.up_proj.weight",
               "ffn_down.weight": "mixer.down_proj.weight", "ssm_in.weight": "mixer.in_proj.weight",
               "ssm_out.weight": "mixer.out_proj.weight", "ssm_conv1d.weight": "mixer.conv1d.weight",
               "ssm_conv1d.bias": "mixer.conv1d.bias", "ssm_dt.bias": "mixer.dt_bias", "ssm_d": "mixer.D",
               "ssm_norm.weight": "mixer.norm.weight"}
        if i is None:
            return [(top[rest], None, a)]
        if rest == "attn_q.weight":
            return [(L + "mixer.q_proj.weight", None, _unpermute(a, cfg.num_attention_heads))]
        if rest == "attn_k.weight":
            return [(L + "mixer.k_proj.weight", None, _unpermute(a, cfg.num_key_value_heads))]
        if rest == "ssm_a":
            return [(L + "mixer.A_log", None, np.log(-a))]
        return [(L + per[rest], None, a)]
    if arch == "falcon-h1":
        L = f"model.layers.{i}."
        if i is None:
            if rest == "token_embd.weight":
                return [("model.embed_tokens.weight", None, a / cfg.embedding_multiplier)]
            if rest == "output.weight":
                return [("lm_head.weight", None, a / cfg.lm_head_multiplier)]
            return [({"output_norm.weight": "model.final_layernorm.weight"}[rest], None, a)]
        ain = cfg.attention_in_multiplier
        scale = {"attn_q.weight": ("self_attn.q_proj.weight", ain),
                 "attn_k.weight": ("self_attn.k_proj.weight", ain * cfg.key_multiplier),
                 "attn_v.weight": ("self_attn.v_proj.weight", ain),
                 "attn_output.weight": ("self_attn.o_proj.weight", cfg.attention_out_multiplier),
                 "ffn_gate.weight": ("feed_forward.gate_proj.weight", cfg.mlp_multipliers[0]),
                 "ffn_up.weight": ("feed_forward.up_proj.weight", 1.0),
                 "ffn_down.weight": ("feed_forward.down_proj.weight", cfg.mlp_multipliers[1]),
                 "ssm_out.weight": ("mamba.out_proj.weight", cfg.ssm_out_multiplier)}
        if rest in scale:
            p, s = scale[rest]
            return [(L + p, None, a / s)]
        if rest == "ssm_in.weight":
            di, gs = cfg.mamba_d_ssm, cfg.mamba_n_groups * cfg.mamba_d_state
            m = cfg.ssm_multipliers
            row = np.ones(a.shape[0])
            row[:di] *= m[0]
            row[di:2 * di] *= m[1]
            row[2 * di:2 * di + gs] *= m[2]
            row[2 * di + gs:2 * di + 2 * gs] *= m[3]
            row[2 * di + 2 * gs:] *= m[4]
            return [(L + "mamba.in_proj.weight", None, a / (row[:, None] * cfg.ssm_in_multiplier))]
        if rest == "ssm_a":
            return [(L + "mamba.A_log", None, np.log(-a))]
        # this converter names falcon-h1's pre-FFN norm "blk.N.ffn_norm" (no ".weight" suffix)
        per = {"attn_norm.weight": "input_layernorm.weight", "ffn_norm": "pre_ff_layernorm.weight",
               "ssm_conv1d.weight": "mamba.conv1d.weight", "ssm_conv1d.bias": "mamba.conv1d.bias",
               "ssm_dt.bias": "mamba.dt_bias", "ssm_d": "mamba.D", "ssm_norm.weight": "mamba.norm.weight"}
        return [(L + per[rest], None, a)]
    if arch == "lfm2":
        L = f"model.layers.{i}."
        top = {"token_embd.weight": "model.embed_tokens.weight",
               "token_embd_norm.weight": "model.embedding_norm.weight", "output.weight": "lm_head.weight"}
        per = {"attn_norm.weight": "operator_norm.weight", "ffn_norm.weight": "ffn_norm.weight",
               "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
               "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.out_proj.weight",
               "attn_q_norm.weight": "self_attn.q_layernorm.weight",
               "attn_k_norm.weight": "self_attn.k_layernorm.weight",
               "ffn_gate.weight": "feed_forward.w1.weight", "ffn_down.weight": "feed_forward.w2.weight",
               "ffn_up.weight": "feed_forward.w3.weight", "shortconv.conv.weight": "conv.conv.weight",
               "shortconv.in_proj.weight": "conv.in_proj.weight",
               "shortconv.out_proj.weight": "conv.out_proj.weight"}
        return [(top[rest] if i is None else L + per[rest], None, a)]
    if arch == "qwen35":
        return _qwen35_to_hf(cfg, i, rest, a)
    raise ValueError(arch)


def _untile_v(a, axis, nk, nv, hd):
    """Inverse of the converter's _reorder_v_heads: value heads from tiled order (head r * nk + g
    is value head r of key head g) back to grouped (g * nv/nk + r), along `axis`."""
    r = nv // nk
    a = np.moveaxis(a, axis, 0)
    shp = a.shape
    a = a.reshape(r, nk, hd, *shp[1:]).swapaxes(0, 1).reshape(shp)
    return np.moveaxis(a, 0, axis)


def _qwen35_to_hf(cfg, i, rest, a):
    L = f"model.layers.{i}."
    if i is None:
        top = {"token_embd.weight": ("model.embed_tokens.weight", 0.0),
               "output_norm.weight": ("model.norm.weight", 1.0), "output.weight": ("lm_head.weight", 0.0)}
        p, off = top[rest]
        return [(p, None, a - off)]
    nk, nv = cfg.linear_num_key_heads, cfg.linear_num_value_heads
    hk, hv = cfg.linear_key_head_dim, cfg.linear_value_head_dim

    def untile(x, axis, hd):
        return _untile_v(x, axis, nk, nv, hd) if nk != nv else x
    plain = {"attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
             "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
             "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
             "ffn_down.weight": "mlp.down_proj.weight", "ssm_norm.weight": "linear_attn.norm.weight"}
    plus1 = {"attn_norm.weight": "input_layernorm.weight",
             "post_attention_norm.weight": "post_attention_layernorm.weight",
             "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight"}
    if rest in plain:
        return [(L + plain[rest], None, a)]
    if rest in plus1:
        return [(L + plus1[rest], None, a - 1.0)]
    qk = 2 * nk * hk
    if rest == "attn_qkv.weight":
        return [(L + "linear_attn.in_proj_qkv.weight", None, np.concatenate([a[:qk], untile(a[qk:], 0, hv)]))]
    if rest == "ssm_conv1d.weight":
        return [(L + "linear_attn.conv1d.weight", None, np.concatenate([a[:qk], untile(a[qk:], 0, hv)]))]
    if rest == "attn_gate.weight":
        return [(L + "linear_attn.in_proj_z.weight", None, untile(a, 0, hv))]
    if rest == "ssm_out.weight":
        return [(L + "linear_attn.out_proj.weight", None, untile(a, 1, hv))]
    per_head = {"ssm_beta.weight": "linear_attn.in_proj_b.weight", "ssm_alpha.weight": "linear_attn.in_proj_a.weight",
                "ssm_dt.bias": "linear_attn.dt_bias"}
    if rest in per_head:
        return [(L + per_head[rest], None, untile(a, 0, 1))]
    if rest == "ssm_a":
        return [(L + "linear_attn.A_log", None, untile(np.log(-a.reshape(-1)), 0, 1))]
    raise KeyError(rest)


def read_gguf(path: Path, gguf_mod):
    r = gguf_mod.GGUFReader(str(path))
    out = {}
    for t in r.tensors:
        deq = gguf_mod.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        out[t.name] = (t.tensor_type.name, np.asarray(deq, np.float32).reshape(shape))
    return r, out


def load_from_gguf(model, arch, cfg, tensors, only_nonf32: bool):
    """Return {hf_param: float64 tensor} reconstructed from gguf tensors."""
    sd = {k: v.detach().double().clone() for k, v in model.state_dict().items()}
    touched = {}
    for name, (ttype, arr) in tensors.items():
        if only_nonf32 and ttype == "F32":
            continue
        for p, sl, val in gguf_to_hf(arch, cfg, name, arr):
            import torch
            tgt = sd[p]
            v = torch.from_numpy(np.ascontiguousarray(val))
            if sl is None:
                tgt.copy_(v.reshape(tgt.shape))
            else:
                tgt[sl].copy_(v.reshape(tgt[sl].shape))
            touched.setdefault(p, []).append(name)
    if getattr(cfg, "tie_word_embeddings", False) and "lm_head.weight" in sd:
        # the tied head is the same parameter: load_state_dict would otherwise overwrite the
        # file's embedding values with the untouched lm_head copy taken from state_dict()
        emb = next(k for k in sd if k.endswith("embed_tokens.weight"))
        sd["lm_head.weight"] = sd[emb]
    return sd, touched


def check_mapping(model, arch, cfg, f32_tensors):
    """The f32 gguf mapped back must reproduce every HF parameter (validates gguf_to_hf)."""
    sd, touched = load_from_gguf(model, arch, cfg, f32_tensors, only_nonf32=False)
    orig = dict(model.named_parameters())
    worst = 0.0
    for k, p in orig.items():
        if k not in touched:
            if k == "lm_head.weight" and cfg.tie_word_embeddings:
                continue
            raise RuntimeError(f"{arch}: HF parameter {k} not found in the gguf")
        ref = p.detach().double()
        # relative to the value the file stores: Qwen3.5's norms are stored as 1 + w, in float32
        scale = ref.abs() + (1.0 if arch == "qwen35" and k.endswith("norm.weight") else 1e-6)
        err = float(((sd[k] - ref).abs() / scale).max())
        worst = max(worst, err)
        if err > 1e-5:
            raise RuntimeError(f"{arch}: gguf->HF mapping mismatch for {k}: rel err {err}")
    return worst

# ----------------------------------------------------------------------------- llama.cpp check


def llamacpp_agreement(path: Path, ref):
    """llama.cpp's errors with its default context (f16 KV cache) plus, under "kv_cache_f32", with
    type_k = type_v = F32 (isolates the weight/activation path from K/V rounding)."""
    res = _llamacpp_agreement(path, ref, {})
    kv = _llamacpp_agreement(path, ref, {"type_k": 0, "type_v": 0})
    res["kv_cache_f32"] = {k: kv[k] for k in ("max_abs_err", "max_abs_err_prompt", "max_abs_err_greedy_steps",
                                              "max_abs_err_multi0", "max_abs_err_multi1", "greedy_match")}
    return res


def _llamacpp_agreement(path: Path, ref, extra):
    """Max abs logit error of llama.cpp vs a reference npz dict, teacher-forced greedy tokens,
    plus llama.cpp's own free-running greedy tokens."""
    from llama_cpp import Llama
    res = {}
    prompt = ref["tokens"].tolist()
    greedy = ref["greedy_tokens"].tolist()

    def new():
        return Llama(model_path=str(path), logits_all=True, n_ctx=64, n_threads=2, n_batch=64,
                     verbose=False, **extra)
    # prompt in one batch, then one token per decode step (exercises the recurrent-state path)
    llm = new()
    llm.eval(prompt)
    n = len(prompt)
    lp = np.array(llm.scores[:n], np.float64)
    err_prompt = float(np.abs(lp - ref["logits"]).max())
    steps = [np.array(llm.scores[n - 1], np.float64)]
    for i in range(N_GREEDY - 1):
        llm.eval([greedy[i]])
        steps.append(np.array(llm.scores[n + i], np.float64))
    steps = np.stack(steps)
    err_greedy = float(np.abs(steps - ref["greedy_logits"]).max())
    del llm
    # free-running greedy
    llm = new()
    llm.eval(prompt)
    own = []
    for i in range(N_GREEDY):
        t = int(np.argmax(np.array(llm.scores[llm.n_tokens - 1])))
        own.append(t)
        if i < N_GREEDY - 1:
            llm.eval([t])
    del llm
    multi = {}
    for k in ("multi0", "multi1"):
        llm = new()
        toks = ref[f"{k}_tokens"].tolist()
        llm.eval(toks)
        multi[k] = float(np.abs(np.array(llm.scores[:len(toks)], np.float64) - ref[f"{k}_logits"]).max())
        del llm
    res["max_abs_err_prompt"] = err_prompt
    res["max_abs_err_greedy_steps"] = err_greedy
    res["max_abs_err"] = max(err_prompt, err_greedy)
    res["max_abs_err_multi0"] = multi["multi0"]
    res["max_abs_err_multi1"] = multi["multi1"]
    res["greedy_tokens_llamacpp"] = own
    res["greedy_match"] = own == greedy
    res["greedy_first_mismatch"] = next((i for i, (a, b) in enumerate(zip(own, greedy)) if a != b), None)
    return res

# ----------------------------------------------------------------------------- main


def build_model(arch, seed, emb_std=None):
    import importlib
    import torch
    import transformers
    _, cfg_fn, cls_name, mod_name = ARCHS[arch]
    cfg = cfg_fn()
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(cfg).float().eval()
    perturb(model, seed + 1, EMB_STD[arch] if emb_std is None else emb_std, LM_STD)
    unclamp_dt(model)
    return model, cfg, [importlib.import_module(mod_name)]


def unclamp_dt(model):
    """transformers' Nemotron-H clamps dt below at config.time_step_min (1e-3); llama.cpp's graph
    does not clamp (the GGUF has no key for it), so neither may the reference. (time_step_min=0
    in the config would break its dt_bias init, a log of it.)"""
    for mod in model.modules():
        if getattr(mod, "time_step_limit", None) is not None:
            mod.time_step_limit = (0.0, float("inf"))


def sha256(p: Path):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "hybrid")
    ap.add_argument("--only", action="append", choices=list(ARCHS))
    ap.add_argument("--llama-cpp", type=Path, default=DEFAULT_LLAMA)
    ap.add_argument("--spm", type=Path, default=DEFAULT_SPM)
    ap.add_argument("--converter-site", type=Path, default=Path("/tmp/tinyggml-convert-site"))
    ap.add_argument("--max-seed-tries", type=int, default=12)
    ap.add_argument("--keep-work", type=Path, default=None, help="keep HF checkpoints/logs here")
    a = ap.parse_args()

    import torch
    import transformers
    import llama_cpp
    torch.set_num_threads(2)
    sys.path.insert(0, str(a.llama_cpp / "gguf-py"))
    import gguf as vgguf
    assert vgguf.__file__.startswith(str(a.llama_cpp / "gguf-py")), vgguf.__file__

    ensure_converter_site(a.converter_site)
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(a.keep_work) if a.keep_work else Path(tempfile.mkdtemp(prefix="hybridfix-"))
    work.mkdir(parents=True, exist_ok=True)
    spm_path = work / "tokenizer.model"
    small_spm(a.spm, spm_path)
    prompts = make_prompts(spm_path)

    agree_path = a.out / "llamacpp_agreement.json"
    agreement = json.loads(agree_path.read_text()) if agree_path.exists() else {}
    agreement["_meta"] = {
        "llama_cpp_python": llama_cpp.__version__, "llama_cpp_commit": LLAMA_COMMIT,
        "transformers": transformers.__version__, "torch": torch.__version__,
        "converter_transformers": CONVERTER_TRANSFORMERS,
        "how": "max abs logit difference, llama.cpp (llama-cpp-python Llama, logits_all, n_threads=2) "
               "vs float64 transformers reference: f32 gguf vs <name>.ref.npz, f16/q8_0/q4_0 gguf vs "
               "<name>-<type>.deqref.npz; prompt in one batch, then the 16 reference greedy tokens fed "
               "one per decode step; greedy_match = llama.cpp's own free-running argmax equals the "
               "reference greedy tokens",
    }
    for arch in (a.only or list(ARCHS)):
        print(f"=== {arch}", flush=True)
        ref = None
        for k in range(a.max_seed_tries):
            seed = SEEDS[arch] + 10 * k
            model, cfg, mods = build_model(arch, seed)
            ref = reference(model, prompts, mods)
            distinct, margin = greedy_quality(ref)
            print(f"  seed {seed}: {distinct} distinct greedy ids, min margin {margin:.4f}, "
                  f"f32/f64 gap {float(ref['gap_f32_f64_max_abs']):.3g}", flush=True)
            if distinct >= 6 and margin >= 0.05:
                break
        else:
            print(f"  WARNING: no seed met the greedy criteria; using seed {seed}", flush=True)
        ref["seed"] = np.int64(seed)
        hf_dir = work / f"hf-{arch}"
        if hf_dir.exists():
            shutil.rmtree(hf_dir)
        save_checkpoint(model, arch, hf_dir, spm_path)
        # round trip: transformers 5 reloads the saved (legacy-named) config identically
        re = getattr(transformers, ARCHS[arch][2]).from_pretrained(hf_dir, attn_implementation="eager").float().eval()
        unclamp_dt(re)
        lg = forward_logits(re, prompts["tokens"], False, mods)
        lg0 = forward_logits(model, prompts["tokens"], False, mods)
        assert np.abs(lg - lg0).max() == 0.0, "reloaded checkpoint differs"
        del re

        files = {}
        for ot in ("f32", "f16"):
            p = a.out / f"{arch}-{ot}.gguf"
            # the tiny Qwen3.5 has no multi-token-prediction block (its converter wants one unless
            # told --no-mtp)
            convert(a.llama_cpp, a.converter_site, hf_dir, p, ot, work,
                    ("--no-mtp",) if arch == "qwen35" else ())
            files[ot] = p
        for ot, ft in (("q8_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0), ("q4_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0)):
            p = a.out / f"{arch}-{ot}.gguf"
            quantize(files["f32"], p, ft)
            files[ot] = p

        np.savez_compressed(a.out / f"{arch}.ref.npz", **ref)
        _, f32_tensors = read_gguf(files["f32"], vgguf)
        worst = check_mapping(model, arch, cfg, f32_tensors)
        print(f"  gguf->HF mapping verified on the f32 file (max rel err {worst:.2e})", flush=True)
        entry = {"seed": seed, "files": {}}
        entry["gap_f32_f64_max_abs"] = float(ref["gap_f32_f64_max_abs"])
        entry["greedy_tokens_ref"] = ref["greedy_tokens"].tolist()
        entry["greedy_distinct"], entry["greedy_min_margin"] = greedy_quality(ref)
        res = llamacpp_agreement(files["f32"], ref)
        res["vs"] = f"{arch}.ref.npz"
        res["tensor_types"] = {}
        entry["files"][files["f32"].name] = res
        print(f"  f32: {res['max_abs_err']:.3g} greedy_match={res['greedy_match']}", flush=True)
        for ot in ("f16", "q8_0", "q4_0"):
            reader, tens = read_gguf(files[ot], vgguf)
            sd, touched = load_from_gguf(model, arch, cfg, tens, only_nonf32=True)
            dm = make_f64(model, mods)
            dm.load_state_dict({k: v for k, v in sd.items()}, strict=True)
            dref = reference(model, prompts, mods, m64=dm)
            dref["seed"] = ref["seed"]
            np.savez_compressed(a.out / f"{arch}-{ot}.deqref.npz", **dref)
            res = llamacpp_agreement(files[ot], dref)
            res["vs"] = f"{arch}-{ot}.deqref.npz"
            types_ = {}
            for n_, (tt, _) in tens.items():
                types_.setdefault(tt, 0)
                types_[tt] += 1
            res["tensor_types"] = types_
            res["deqref_greedy_equals_f64_ref_greedy"] = bool((dref["greedy_tokens"] == ref["greedy_tokens"]).all())
            res["deqref_gap_f32_f64_max_abs"] = float(dref["gap_f32_f64_max_abs"])
            entry["files"][files[ot].name] = res
            print(f"  {ot}: {res['max_abs_err']:.3g} greedy_match={res['greedy_match']} types={types_}", flush=True)
        for p in files.values():
            entry["files"][p.name]["bytes"] = p.stat().st_size
            entry["files"][p.name]["sha256"] = sha256(p)
        agreement[arch] = entry
        agree_path.write_text(json.dumps(agreement, indent=2, sort_keys=True) + "\n")
    if not a.keep_work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
