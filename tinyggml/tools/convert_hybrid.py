"""Hybrid checkpoints for the converter (convert.py): Mamba-2, short-convolution or gated
delta-rule layers beside attention layers, with the names, transforms and keys of llama.cpp's
convert_hf_to_gguf.py (conversion/granite.py, falcon_h1.py, nemotron.py, lfm2.py, qwen.py over
mamba.py, llama.py and base.py, at the vendored commit).

  GraniteMoeHybridForCausalLM, dense (num_local_experts 0)  -> arch "granitehybrid"
  FalconH1ForCausalLM                                       -> arch "falcon-h1"
  NemotronHForCausalLM, dense                               -> arch "nemotron_h"
  Lfm2ForCausalLM (LFM2ForCausalLM), conv_bias false        -> arch "lfm2"
  Qwen3_5ForCausalLM, Qwen3_5ForConditionalGeneration (text) -> arch "qwen35"

Tensors (checkpoint -> GGUF):
  every arch  mamba.* / mixer.*: A_log -> ssm_a = -exp(A_log), {1, n_head}; D -> ssm_d {1, n_head};
              dt_bias -> ssm_dt.bias; conv1d.weight squeezed to {d_conv, channels};
              norm.weight -> ssm_norm.weight {d_inner/n_group, n_group}
  granite     q_proj / k_proj rows permuted per head (llama.cpp's LlamaModel.permute, rope
              pairs; Granite-4.0-H has no rope, so no logit changes); shared_mlp.input_linear
              split into ffn_gate (first half) and ffn_up; post_attention_layernorm -> ffn_norm
  nemotron_h  q_proj / k_proj permuted as Granite's (llama.cpp's class derives from it);
              the MLP layers' up_proj / down_proj -> ffn_up / ffn_down
  falcon-h1   the muP multipliers folded into the weights, one float32 multiply per factor in
              llama.cpp's order: embedding, lm_head, attention in (q, k, v) and key (k), attention
              out, SSM in (then the z / x / B / C / dt row blocks of ssm_in), SSM out, MLP gate
              and down; pre_ff_layernorm -> `blk.N.ffn_norm`, no ".weight" (llama.cpp's name map)
  lfm2        conv.conv.weight squeezed to {L, n_embd} -> shortconv.conv (F32 in every outtype);
              conv.in_proj / out_proj -> shortconv.*; operator_norm -> attn_norm;
              feed_forward.w1 / w3 / w2 -> ffn_gate / up / down; self_attn.out_proj ->
              attn_output; q_layernorm / k_layernorm -> attn_q_norm / attn_k_norm; q / k not
              permuted (NEOX rope); the final norm model.embedding_norm -> token_embd_norm
  qwen35      linear_attn.*: in_proj_qkv -> attn_qkv, in_proj_z -> attn_gate, in_proj_a /
              in_proj_b -> ssm_alpha / ssm_beta, out_proj -> ssm_out, norm -> ssm_norm {d_v};
              A and dt bias 1-D {n_v}; value heads reordered from grouped by key head to tiled
              (k0v0, k1v0, .., k0v1, ..; llama.cpp's _reorder_v_heads) when n_v != n_k: the V
              rows of in_proj_qkv and conv1d, the rows of in_proj_z / _a / _b, A_log, dt_bias,
              the columns of out_proj. The zero-centred RMS norms (input_layernorm,
              post_attention_layernorm -> post_attention_norm, model.norm, q_norm, k_norm)
              stored as 1 + w (float32), linear_attn.norm as is; q_proj kept whole (each head's
              query then its output gate). The multi-token-prediction block (mtp.*) is left out,
              as llama.cpp does with --no-mtp (the runtime does not run it); for
              Qwen3_5ForConditionalGeneration the text model (model.language_model.*) and
              text_config are read, the vision encoder (model.visual.*) left out
Keys: llama.cpp's set_gguf_parameters, in its order. Its classes set some keys twice
(context_length 2**20 over max_position_embeddings when there is no rope; head_count_kv and
Nemotron-H's feed_forward_length as per-layer arrays over the scalar); GGUFWriter keeps the
first place and the last value, and so does `_Keys`. Granite: the multipliers are keys
(attention.scale, embedding_scale, residual_scale, logit_scale), rope.scaling.finetuned false.
LFM2: TextModel's keys with head_count_kv per layer (0 for conv layers), then vocab_size,
shortconv.l_cache, the RMS epsilon from norm_eps and the FFN size (Lfm2MLP's adjustment).
Qwen3.5: TextModel's keys with key / value length and rope.dimension_sections (mrope_section
padded to 4), then ssm.* (conv kernel, key head size as state size, key heads as group count,
value heads as time-step rank, inner size n_v * d_v), attention.recurrent_layers,
full_attention_interval, rope.dimension_count (head_dim * partial_rotary_factor), and sections
[11, 11, 10, 0] when the config has none; no nextn_predict_layers.
Departures, each where llama.cpp writes a file that does not run or computes something else:
- config.json is read as saved; llama.cpp reads transformers' AutoConfig, whose defaults
  fill keys missing from the file (saved configs hold them all). For LFM2 the keys the
  converter reads take Lfm2Config's defaults here too (_LFM2_DEFAULTS; layer_types from
  full_attn_idxs).
- Granite layer_types and Nemotron-H's list layers_block_type also read in transformers 5's
  names ("linear_attention", "full_attention", "mlp"); Nemotron-H is MoE when a layer is, not
  when num_experts_per_tok is set (transformers 5 writes it for dense models too).
- Dense Granite whose intermediate_size differs from shared_intermediate_size (the FFN size):
  feed_forward_length is the FFN's size (llama.cpp writes intermediate_size, its loader fails).
- Falcon-H1 multipliers absent from config.json are transformers' defaults (1.0) (llama.cpp
  fails); q/k/v biases are refused (llama.cpp scales them by attention_in_multiplier, which
  multiplies the input, not the bias).
- float16 checkpoints: the multipliers, exp and Qwen3.5's 1 + w are applied to float32 values
  (llama.cpp computes them in float16; bfloat16 ones it widens to float32 first, as here).
- Qwen3.5: keys missing from config.json take Qwen3_5TextConfig's defaults (_QWEN35_DEFAULTS;
  layer_types from full_attention_interval); refused: mixture of experts (num_experts, the
  Qwen3_5Moe* classes), Qwen3-Next, attention_bias true, hidden_act other than silu,
  linear_key_head_dim != linear_value_head_dim (llama.cpp's keys assume them equal), value heads
  not a multiple of key heads, layer kinds other than linear_attention / full_attention.
- LFM2 with block_auto_adjust_ff_dim and block_ffn_dim_multiplier null: the FFN size is
  transformers' (not rounded to block_multiple_of; llama.cpp rounds it, its loader fails).
  Refused: conv_bias true, non-causal configs (is_causal false), layer kinds other than "conv"
  and "full_attention", and the MoE / embedding variants (UNSUPPORTED), which the runtime has no
  graph for; llama.cpp converts them.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

import numpy as np
import gguf

from ..errors import TinyGGMLError

ARCHS = {"GraniteMoeHybridForCausalLM": "granitehybrid", "FalconH1ForCausalLM": "falcon-h1",
         "NemotronHForCausalLM": "nemotron_h", "Lfm2ForCausalLM": "lfm2", "LFM2ForCausalLM": "lfm2",
         "Qwen3_5ForCausalLM": "qwen35", "Qwen3_5ForConditionalGeneration": "qwen35"}
# checkpoints llama.cpp converts that the runtime has no graph for -> why
UNSUPPORTED = {
    "Lfm2MoeForCausalLM": "LFM2 mixture of experts (arch lfm2moe) is not supported; the dense "
                          "Lfm2ForCausalLM is",
    "Lfm2Model": "an LFM2 embedding model (no LM head) is not supported; Lfm2ForCausalLM is",
    "Lfm2BidirectionalModel": "a bidirectional LFM2 embedding model is not supported; the causal "
                              "Lfm2ForCausalLM is",
    **{a: "Qwen3.5 mixture of experts (arch qwen35moe) is not supported; the dense "
          "Qwen3_5ForCausalLM is" for a in ("Qwen3_5MoeForCausalLM",
                                            "Qwen3_5MoeForConditionalGeneration")},
    "Qwen3NextForCausalLM": "Qwen3-Next (arch qwen3next) is not supported; the dense "
                            "Qwen3_5ForCausalLM is"}
SSM, ATTN, FFN, CONV = "ssm", "attn", "ffn", "conv"     # the parts a layer can have
# Lfm2Config's defaults for the keys read here (AutoConfig gives them to llama.cpp)
_LFM2_DEFAULTS = {"block_auto_adjust_ff_dim": True, "block_ffn_dim_multiplier": 1.0,
                  "block_multiple_of": 256, "conv_L_cache": 3, "conv_bias": False,
                  "norm_eps": 1e-5, "max_position_embeddings": 128000, "rope_theta": 1e6}
# Qwen3_5TextConfig's defaults for the keys read here
_QWEN35_DEFAULTS = {"head_dim": 256, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128,
                    "linear_value_head_dim": 128, "linear_num_key_heads": 16,
                    "linear_num_value_heads": 32, "rms_norm_eps": 1e-6,
                    "max_position_embeddings": 32768, "attention_bias": False,
                    "hidden_act": "silu"}

# ---- checkpoint names -> GGUF names ----------------------------------------------------------

_MAMBA2 = {"in_proj.weight": "ssm_in.weight", "conv1d.weight": "ssm_conv1d.weight",
           "conv1d.bias": "ssm_conv1d.bias", "dt_bias": "ssm_dt.bias", "A_log": "ssm_a",
           "D": "ssm_d", "norm.weight": "ssm_norm.weight", "out_proj.weight": "ssm_out.weight"}
_ATTN = {f"{hf}_proj.{s}": f"attn_{g}.{s}" for s in ("weight", "bias")
         for hf, g in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "output"))}


def _under(prefix: str, table: dict) -> dict:
    return {prefix + k: (v,) for k, v in table.items()}


# per arch: (global names, prefix of block names, block names); a block name maps to a tuple
# of GGUF names, two for Granite's fused gate/up (split by rows)
_NAMES = {
    "granitehybrid": (
        {"model.embed_tokens.weight": "token_embd.weight",
         "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"},
        "model.layers.",
        {"input_layernorm.weight": ("attn_norm.weight",),
         "post_attention_layernorm.weight": ("ffn_norm.weight",),
         **_under("mamba.", _MAMBA2), **_under("self_attn.", _ATTN),
         "shared_mlp.input_linear.weight": ("ffn_gate.weight", "ffn_up.weight"),
         "shared_mlp.output_linear.weight": ("ffn_down.weight",)}),
    "falcon-h1": (
        {"model.embed_tokens.weight": "token_embd.weight",
         "model.final_layernorm.weight": "output_norm.weight", "lm_head.weight": "output.weight"},
        "model.layers.",
        {"input_layernorm.weight": ("attn_norm.weight",), "pre_ff_layernorm.weight": ("ffn_norm",),
         **_under("mamba.", _MAMBA2), **_under("self_attn.", _ATTN),
         **{f"feed_forward.{p}_proj.{s}": (f"ffn_{p}.{s}",) for p in ("gate", "up", "down")
            for s in ("weight", "bias")}}),
    "nemotron_h": (
        {"backbone.embeddings.weight": "token_embd.weight",
         "backbone.norm_f.weight": "output_norm.weight", "lm_head.weight": "output.weight"},
        "backbone.layers.",
        {"norm.weight": ("attn_norm.weight",), **_under("mixer.", _MAMBA2),
         **_under("mixer.", _ATTN),
         **{f"mixer.{p}_proj.{s}": (f"ffn_{p}.{s}",) for p in ("up", "down")
            for s in ("weight", "bias")}}),
    "lfm2": (
        {"model.embed_tokens.weight": "token_embd.weight",
         "model.embedding_norm.weight": "token_embd_norm.weight",
         "lm_head.weight": "output.weight"},
        "model.layers.",
        {"operator_norm.weight": ("attn_norm.weight",), "ffn_norm.weight": ("ffn_norm.weight",),
         **{f"feed_forward.{hf}.weight": (f"ffn_{g}.weight",)
            for hf, g in (("w1", "gate"), ("w3", "up"), ("w2", "down"))},
         **{f"conv.{n}.weight": (f"shortconv.{n}.weight",)
            for n in ("conv", "in_proj", "out_proj")},
         **{f"self_attn.{hf}.weight": (f"attn_{g}.weight",)
            for hf, g in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"),
                          ("out_proj", "output"), ("q_layernorm", "q_norm"),
                          ("k_layernorm", "k_norm"))}}),
    "qwen35": (
        {"model.embed_tokens.weight": "token_embd.weight",
         "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"},
        "model.layers.",
        {"input_layernorm.weight": ("attn_norm.weight",),
         "post_attention_layernorm.weight": ("post_attention_norm.weight",),
         **{f"mlp.{p}_proj.weight": (f"ffn_{p}.weight",) for p in ("gate", "up", "down")},
         **{f"linear_attn.{hf}": (g,) for hf, g in (
             ("in_proj_qkv.weight", "attn_qkv.weight"), ("in_proj_z.weight", "attn_gate.weight"),
             ("in_proj_a.weight", "ssm_alpha.weight"), ("in_proj_b.weight", "ssm_beta.weight"),
             ("conv1d.weight", "ssm_conv1d.weight"), ("dt_bias", "ssm_dt.bias"),
             ("A_log", "ssm_a"), ("norm.weight", "ssm_norm.weight"),
             ("out_proj.weight", "ssm_out.weight"))},
         **{f"self_attn.{hf}.weight": (f"attn_{g}.weight",)
            for hf, g in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "output"),
                          ("q_norm", "q_norm"), ("k_norm", "k_norm"))}}),
}
_REQUIRED = {SSM: ("ssm_in.weight", "ssm_conv1d.weight", "ssm_dt.bias", "ssm_a", "ssm_d",
                   "ssm_norm.weight", "ssm_out.weight"),
             ATTN: ("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"),
             FFN: ("ffn_up.weight", "ffn_down.weight"),
             CONV: ("shortconv.conv.weight", "shortconv.in_proj.weight",
                    "shortconv.out_proj.weight")}
# Qwen3.5's linear attention (the SSM part of its layers)
_QWEN35_SSM = ("attn_qkv.weight", "attn_gate.weight", "ssm_conv1d.weight", "ssm_dt.bias", "ssm_a",
               "ssm_alpha.weight", "ssm_beta.weight", "ssm_norm.weight", "ssm_out.weight")
# Qwen3.5's RMS norm weights, zero-centred in the checkpoint: llama.cpp stores 1 + w
_QWEN35_PLUS_ONE = ("attn_norm.weight", "post_attention_norm.weight", "output_norm.weight",
                    "attn_q_norm.weight", "attn_k_norm.weight")


def _part(name: str):
    """The part of a layer a GGUF block name belongs to (None: the pre-norm, in every layer)."""
    if name.startswith("ssm_") or name in ("attn_qkv.weight", "attn_gate.weight"):
        return SSM
    if name.startswith("shortconv."):
        return CONV
    if name.startswith("ffn_") or name == "post_attention_norm.weight":
        return FFN
    return None if name == "attn_norm.weight" else ATTN


# ---- config ----------------------------------------------------------------------------------

@dataclass
class HybridSpec:
    """Sizes as llama.cpp's converter classes find them (find_hparam also tries "mamba_" + key)."""
    hf_arch: str
    arch: str
    cfg: dict
    n_layer: int
    n_embd: int
    parts: list             # per layer: the set of parts (SSM, ATTN, FFN) it has
    d_inner: int
    d_state: int
    d_conv: int             # LFM2: L, the short conv's taps (its other SSM sizes are 0)
    n_group: int
    n_ssm_head: int
    n_head: int
    n_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int            # padded
    mistral: bool = False
    scales: dict = field(default_factory=dict)      # Falcon-H1's multipliers

    def find(self, keys, default=None):
        return _find(self.cfg, keys, default)


def _find(cfg: dict, keys, default=None):
    """llama.cpp's `find_hparam(keys, optional=True) or default`, with the hybrids' "mamba_"
    prefixed keys tried after the plain ones."""
    keys = list(keys) + ["mamba_" + k for k in keys]
    value = next((cfg[k] for k in keys if k in cfg), None)
    return value if value or default is None else default


def read_spec(cfg_path, cfg: dict, hf_arch: str) -> HybridSpec:
    where = str(cfg_path)
    if hf_arch in UNSUPPORTED:
        raise TinyGGMLError(f"{where}: {hf_arch}: {UNSUPPORTED[hf_arch]}")
    arch = ARCHS[hf_arch]
    if arch == "lfm2":
        cfg = {**_LFM2_DEFAULTS, **cfg}
    if arch == "qwen35":        # a multimodal config keeps the text model's keys in text_config
        cfg = {**_QWEN35_DEFAULTS, **cfg, **(cfg.get("text_config") or {})}

    def need(keys):
        v = _find(cfg, keys)
        if v is None:
            raise TinyGGMLError(f"{where}: none of the keys {list(keys)} is set")
        return int(v)

    n_layer = need(["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
    n_embd = need(["hidden_size", "n_embd", "dim"])
    n_head = need(["num_attention_heads", "n_head", "n_heads"])
    n_kv = need(["num_key_value_heads", "n_kv_heads"])
    scales = {}
    if arch == "granitehybrid":
        if cfg.get("num_local_experts"):
            raise TinyGGMLError(f"{where}: {hf_arch} with num_local_experts "
                                f"{cfg['num_local_experts']} (mixture of experts) is not "
                                f"supported; the dense variants are")
        kinds = _granite_kinds(cfg, where, n_layer)
        parts = [{SSM, FFN} if k == "M" else {ATTN, FFN} for k in kinds]
        if not any(SSM in p for p in parts):
            raise TinyGGMLError(f"{where}: no Mamba layer: a plain Granite model, not supported")
        d_inner = need(["expand", "num_heads"]) * need(["mamba_head_dim", "hidden_size", "d_model"])
        d_state = need(["state_size", "d_state", "state_dim", "ssm_state_size"])
        d_conv, n_group = need(["conv_kernel", "d_conv"]), need(["n_groups", "num_groups"])
        n_ssm_head, head_dim = need(["n_heads", "num_heads"]), n_embd // n_head
        n_ff = int(cfg.get("shared_intermediate_size") or need(["intermediate_size"]))
        pad = 8
    elif arch == "nemotron_h":
        kinds = _nemotron_kinds(cfg, where)
        n_layer = len(kinds)
        parts = [{"M": {SSM}, "*": {ATTN}, "-": {FFN}}[k] for k in kinds]
        d_inner = need(["num_heads"]) * need(["mamba_head_dim", "hidden_size", "d_model"])
        d_state = need(["state_size", "d_state", "state_dim", "ssm_state_size"])
        d_conv, n_group = need(["conv_kernel", "d_conv"]), need(["n_groups", "num_groups"])
        n_ssm_head = need(["n_heads", "num_heads"])
        head_dim = int(cfg.get("head_dim") or need(["attention_head_dim"]))
        n_ff = need(["intermediate_size", "n_inner", "hidden_dim"])
        pad = 8
    elif arch == "qwen35":
        parts = _qwen35_layers(cfg, where, n_layer)
        n_group, d_state = need(["linear_num_key_heads"]), need(["linear_key_head_dim"])
        n_ssm_head = need(["linear_num_value_heads"])
        d_inner = n_ssm_head * need(["linear_value_head_dim"])
        d_conv = need(["linear_conv_kernel_dim"])
        head_dim, n_ff = need(["head_dim"]), need(["intermediate_size"])
        pad = 1         # llama.cpp's Qwen3.5 vocab (tokenizer.json) pads to vocab_size itself
    elif arch == "lfm2":
        parts, n_ff, d_conv = _lfm2_layers(cfg, where, n_layer)
        d_inner = d_state = n_group = n_ssm_head = 0
        head_dim = int(cfg.get("head_dim") or n_embd // n_head)
        pad = 1         # llama.cpp's LFM2 vocab (tokenizer.json) is not padded
    else:
        parts = [{SSM, ATTN, FFN}] * n_layer
        d_inner, d_state = need(["mamba_d_ssm"]), int(_find(cfg, ["state_size", "d_state"], 128))
        d_conv, n_group = int(_find(cfg, ["conv_kernel", "d_conv"], 4)), need(["n_groups"])
        ssm_head_dim = int(_find(cfg, ["mamba_d_head", "head_dim"], 64))
        if d_inner % ssm_head_dim:
            raise TinyGGMLError(f"{where}: mamba_d_ssm {d_inner} is not a multiple of the SSM "
                                f"head size {ssm_head_dim}")
        n_ssm_head, head_dim = d_inner // ssm_head_dim, need(["head_dim"])
        n_ff = need(["intermediate_size"])
        scales = _falcon_scales(cfg, where)
        if _rope_params(cfg).get("rope_theta") is None:
            raise TinyGGMLError(f"{where}: no rope_theta (llama.cpp writes it as rope.freq_base)")
        pad = 1         # llama.cpp's Falcon-H1 vocab is not padded
    vocab = need(["vocab_size"])
    return HybridSpec(hf_arch, arch, cfg, n_layer, n_embd, parts, d_inner, d_state, d_conv,
                      n_group, n_ssm_head, n_head, n_kv, head_dim, n_ff,
                      n_vocab=-(vocab // -pad) * pad, scales=scales)


def _granite_kinds(cfg: dict, where: str, n_layer: int) -> list:
    """"M" / "*" per layer: layer_types, else attn_layer_indices or attn_layer_period/offset."""
    if cfg.get("layer_types"):
        names = {"mamba": "M", "linear_attention": "M", "attention": "*", "full_attention": "*"}
        bad = sorted({t for t in cfg["layer_types"] if t not in names})
        if bad or len(cfg["layer_types"]) != n_layer:
            raise TinyGGMLError(f"{where}: layer_types should name {n_layer} layers 'mamba' or "
                                f"'attention'" + (f", found {bad}" if bad else ""))
        return [names[t] for t in cfg["layer_types"]]
    attn = cfg.get("attn_layer_indices") or []
    if not attn and cfg.get("attn_layer_period"):
        attn = [il for il in range(n_layer)
                if il % cfg["attn_layer_period"] == cfg.get("attn_layer_offset", 0)]
    if not attn:
        raise TinyGGMLError(f"{where}: no layer_types, attn_layer_indices or attn_layer_period")
    return ["*" if il in attn else "M" for il in range(n_layer)]


def _nemotron_kinds(cfg: dict, where: str) -> str:
    """hybrid_override_pattern ("M" Mamba-2, "*" attention, "-" MLP) or a layers_block_type
    list, as a pattern string."""
    pattern = cfg.get("hybrid_override_pattern") or cfg.get("layers_block_type")
    if isinstance(pattern, list):
        names = {"mamba": "M", "linear_attention": "M", "attention": "*", "full_attention": "*",
                 "mlp": "-", "moe": "E"}
        pattern = "".join(names.get(t, "?") for t in pattern)
    if not pattern or not isinstance(pattern, str) or set(pattern) - set("M*-E"):
        raise TinyGGMLError(f"{where}: hybrid_override_pattern should be a string of 'M' "
                            f"(Mamba-2), '*' (attention) and '-' (MLP), found {pattern!r}")
    if "E" in pattern:
        raise TinyGGMLError(f"{where}: mixture-of-experts Nemotron-H layers ('E' in the "
                            f"pattern) are not supported; the dense variants are")
    n_layer = _find(cfg, ["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
    if "hybrid_override_pattern" in cfg and n_layer != len(pattern):
        raise TinyGGMLError(f"{where}: the pattern names {len(pattern)} layers, "
                            f"num_hidden_layers is {n_layer}")
    return pattern


def _qwen35_layers(cfg: dict, where: str, n_layer: int) -> list:
    """Parts per layer of a dense Qwen3.5 config (layer_types, else Qwen3_5TextConfig's: full
    attention every full_attention_interval-th layer); what the runtime cannot run is refused."""
    moe = cfg.get("num_experts") or cfg.get("num_local_experts")
    if moe:
        raise TinyGGMLError(f"{where}: Qwen3.5 with num_experts {moe} (mixture of experts) is "
                            f"not supported; the dense variants are")
    if cfg["attention_bias"]:
        raise TinyGGMLError(f"{where}: Qwen3.5 with attention_bias true (q/k/v/o biases) is not "
                            f"supported")
    if cfg["hidden_act"] != "silu":
        raise TinyGGMLError(f"{where}: Qwen3.5 with hidden_act {cfg['hidden_act']!r} is not "
                            f"supported (the runtime's feed-forward is SwiGLU)")
    dk, dv = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"]
    if dk != dv:
        raise TinyGGMLError(f"{where}: Qwen3.5 with linear_key_head_dim {dk} != "
                            f"linear_value_head_dim {dv} is not supported (llama.cpp's file "
                            f"format assumes them equal)")
    nk, nv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
    if nk <= 0 or nv % nk:
        raise TinyGGMLError(f"{where}: linear_num_value_heads {nv} is not a multiple of "
                            f"linear_num_key_heads {nk}")
    kinds = cfg.get("layer_types")
    if kinds is None:
        every = cfg.get("full_attention_interval", 4)
        kinds = ["linear_attention" if (il + 1) % every else "full_attention"
                 for il in range(n_layer)]
    bad = sorted({str(t) for t in kinds} - {"linear_attention", "full_attention"})
    if bad or len(kinds) != n_layer:
        raise TinyGGMLError(f"{where}: layer_types should name {n_layer} layers "
                            f"'linear_attention' or 'full_attention'"
                            + (f", found {bad}" if bad else ""))
    return [{SSM if t == "linear_attention" else ATTN, FFN} for t in kinds]


def _lfm2_layers(cfg: dict, where: str, n_layer: int) -> tuple:
    """(parts per layer, FFN size, L) of an LFM2 config, as transformers' Lfm2 reads it."""
    if cfg["conv_bias"]:
        raise TinyGGMLError(f"{where}: LFM2 with conv_bias true (biases in the short "
                            f"convolutions) is not supported")
    if cfg.get("is_causal") is False:
        raise TinyGGMLError(f"{where}: a non-causal LFM2 (is_causal false) is not supported")
    kinds = cfg.get("layer_types")
    if kinds is None:           # Lfm2Config: attention at full_attn_idxs (default: every layer)
        idxs = cfg.get("full_attn_idxs")
        kinds = ["full_attention" if idxs is None or il in idxs else "conv"
                 for il in range(n_layer)]
    bad = sorted({str(t) for t in kinds} - {"conv", "full_attention"})
    if bad or len(kinds) != n_layer:
        raise TinyGGMLError(f"{where}: layer_types should name {n_layer} layers 'conv' or "
                            f"'full_attention'" + (f", found {bad}" if bad else ""))
    ff = int(_find(cfg, ["block_ff_dim", "intermediate_size"]))
    if cfg["block_auto_adjust_ff_dim"]:     # Lfm2MLP
        ff, mult, m = int(2 * ff / 3), cfg["block_ffn_dim_multiplier"], cfg["block_multiple_of"]
        if mult is not None:
            ff = m * -(int(mult * ff) // -m)
    parts = [{CONV if t == "conv" else ATTN, FFN} for t in kinds]
    return parts, ff, int(cfg["conv_L_cache"])


def _falcon_scales(cfg: dict, where: str) -> dict:
    """Falcon-H1's multipliers (transformers' defaults, 1.0, where config.json has none)."""
    mlp = cfg.get("mlp_multipliers") or [1.0, 1.0]
    ssm = cfg.get("ssm_multipliers") or [1.0] * 5
    if len(mlp) != 2 or len(ssm) != 5:
        raise TinyGGMLError(f"{where}: mlp_multipliers should hold 2 values and ssm_multipliers 5")
    one = lambda k: 1.0 if cfg.get(k) is None else float(cfg[k])      # noqa: E731
    ain = one("attention_in_multiplier")
    # GGUF block name -> factors, applied one at a time (llama.cpp: k * key * attention_in)
    return {"ffn_down": [mlp[1]], "ffn_gate": [mlp[0]], "attn_k": [one("key_multiplier"), ain],
            "attn_q": [ain], "attn_v": [ain], "attn_output": [one("attention_out_multiplier")],
            "ssm_out": [one("ssm_out_multiplier")], "ssm_in": [one("ssm_in_multiplier")],
            "ssm_in_rows": [float(m) for m in ssm], "output": [one("lm_head_multiplier")],
            "token_embd": [one("embedding_multiplier")]}


# ---- plan: names, checks, shapes, transforms -------------------------------------------------

_CONVS = ("ssm_conv1d.weight", "shortconv.conv.weight")     # {ch, 1, d_conv} -> {ch, d_conv}


def plan(spec: HybridSpec, st) -> list:
    """(checkpoint name, GGUF name, GGUF shape in numpy order, load(st) -> array) for every
    tensor, in the checkpoint's order (a fused gate/up gives two, in its place)."""
    glob, prefix, block = _NAMES[spec.arch]
    found = {}          # GGUF name -> (checkpoint name, index among its GGUF names, count)
    for src in st.index:
        if src.endswith(".rotary_emb.inv_freq"):     # llama.cpp skips these buffers too
            continue
        hf = _text_name(spec, src)
        if hf is None:
            continue
        m = re.fullmatch(re.escape(prefix) + r"(\d+)\.(.+)", hf)
        names = (glob[hf],) if hf in glob else None
        if m and m.group(2) in block:
            il = int(m.group(1))
            if il >= spec.n_layer:
                raise TinyGGMLError(f"{st.file(src)}: tensor '{src}' is in block {il}, but the "
                                    f"config has {spec.n_layer} blocks")
            part = _part(block[m.group(2)][0])
            if part is not None and part not in spec.parts[il]:
                raise TinyGGMLError(f"{st.file(src)}: tensor '{src}' is in block {il}, which "
                                    f"the config makes a layer without {part} weights")
            names = tuple(f"blk.{il}.{n}" for n in block[m.group(2)])
        if names is None:
            raise TinyGGMLError(f"{st.file(src)}: tensor '{src}' is not part of a {spec.hf_arch} "
                                f"model this converter supports")
        for k, name in enumerate(names):
            found[name] = (src, k, len(names))
    _check_complete(spec, st, found)
    embd = st.shape(found["token_embd.weight"][0])
    shapes = _shapes(spec, embd[0] if len(embd) == 2 else -1)
    items = []
    for name, (src, k, n) in found.items():
        local = name.split(".", 2)[2] if name.startswith("blk.") else name
        got, want = st.shape(src), shapes[local]
        want = (want[0] * n,) + want[1:]
        if got != want and not (local in _CONVS and got == want[::2]):
            raise TinyGGMLError(f"{st.file(src)}: tensor '{src}' ({name}) has shape "
                                f"{list(got)}, expected {list(want)} from the config")
        if spec.arch == "falcon-h1" and local.split(".")[0] in ("attn_q", "attn_k", "attn_v") \
                and local.endswith(".bias"):
            raise TinyGGMLError(f"{st.file(src)}: tensor '{src}': Falcon-H1 q/k/v biases are not "
                                f"supported (llama.cpp scales them by attention_in_multiplier)")
        out_shape = _gguf_shape(spec, local, (got[0] // n,) + got[1:])
        items.append((src, name, out_shape, _loader(spec, src, local, k, n, out_shape)))
    return items


def _text_name(spec: HybridSpec, src: str):
    """The name to map for checkpoint tensor `src`, None to leave it out: Qwen3.5's
    multi-token-prediction block (mtp.*) and, in Qwen3_5ForConditionalGeneration checkpoints,
    the vision encoder (model.visual.*); their text model is under model.language_model."""
    if spec.arch != "qwen35":
        return src
    if src.startswith(("mtp.", "model.mtp.", "model.visual.")):
        return None
    return src.replace("model.language_model.", "model.", 1)


def _check_complete(spec: HybridSpec, st, found: dict) -> None:
    wanted = ["token_embd.weight",
              "token_embd_norm.weight" if spec.arch == "lfm2" else "output_norm.weight"]
    for il, parts in enumerate(spec.parts):
        required = {**_REQUIRED, SSM: _QWEN35_SSM} if spec.arch == "qwen35" else _REQUIRED
        names = ["attn_norm.weight"] + [n for p in sorted(parts) for n in required[p]]
        if FFN in parts and spec.arch != "nemotron_h":
            names += ["ffn_gate.weight", {"falcon-h1": "ffn_norm",
                                          "qwen35": "post_attention_norm.weight"}.get(
                                              spec.arch, "ffn_norm.weight")]
        if ATTN in parts and spec.arch in ("lfm2", "qwen35"):
            names += ["attn_q_norm.weight", "attn_k_norm.weight"]
        if spec.arch == "falcon-h1" and not spec.cfg.get("mamba_rms_norm", True):
            names.remove("ssm_norm.weight")         # no gated norm (mamba_rms_norm false)
        wanted += [f"blk.{il}.{n}" for n in names]
    missing = [w for w in wanted if w not in found]
    if missing:
        raise TinyGGMLError(f"{st.file(next(iter(st.index)))}: missing tensor(s) for "
                            f"{spec.hf_arch}: {', '.join(missing[:8])}"
                            f"{' ...' if len(missing) > 8 else ''}")


def _shapes(spec: HybridSpec, n_rows: int) -> dict:
    """GGUF name (block part) -> expected checkpoint shape (numpy order) of one GGUF tensor."""
    e, di, nh = spec.n_embd, spec.d_inner, spec.n_ssm_head
    ch = di + 2 * spec.n_group * spec.d_state
    nq, nk = spec.n_head * spec.head_dim, spec.n_kv * spec.head_dim
    s = {"token_embd.weight": (n_rows, e), "output.weight": (n_rows, e), "output_norm.weight": (e,),
         "token_embd_norm.weight": (e,), "attn_norm.weight": (e,), "ffn_norm.weight": (e,),
         "ffn_norm": (e,), "shortconv.conv.weight": (e, 1, spec.d_conv),
         "shortconv.in_proj.weight": (3 * e, e), "shortconv.out_proj.weight": (e, e),
         "attn_q_norm.weight": (spec.head_dim,), "attn_k_norm.weight": (spec.head_dim,),
         "ssm_in.weight": (di + ch + nh, e), "ssm_conv1d.weight": (ch, 1, spec.d_conv),
         "ssm_conv1d.bias": (ch,), "ssm_dt.bias": (nh,), "ssm_a": (nh,), "ssm_d": (nh,),
         "ssm_norm.weight": (di,), "ssm_out.weight": (e, di),
         "attn_q.weight": (nq, e), "attn_k.weight": (nk, e), "attn_v.weight": (nk, e),
         "attn_output.weight": (e, nq), "attn_output.bias": (e,),
         "ffn_gate.weight": (spec.n_ff, e), "ffn_up.weight": (spec.n_ff, e),
         "ffn_down.weight": (e, spec.n_ff), "ffn_down.bias": (e,)}
    for n in ("attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up"):
        s[n + ".bias"] = s[n + ".weight"][:1]
    if spec.arch == "qwen35":       # attn_q: each head's query, then its output gate
        s.update({"attn_qkv.weight": (ch, e), "attn_gate.weight": (di, e),
                  "ssm_alpha.weight": (nh, e), "ssm_beta.weight": (nh, e),
                  "ssm_norm.weight": (di // nh,), "attn_q.weight": (2 * nq, e),
                  "post_attention_norm.weight": (e,)})
    return s


def _gguf_shape(spec: HybridSpec, local: str, found: tuple) -> tuple:
    if local in _CONVS:
        return found[0], found[-1]
    if spec.arch == "qwen35":       # A, dt bias and the per-head norm stay 1-D
        return found
    if local in ("ssm_a", "ssm_d"):
        return found[0], 1
    if local == "ssm_norm.weight":
        return spec.n_group, spec.d_inner // spec.n_group
    return found


def _loader(spec: HybridSpec, src: str, local: str, k: int, n: int, shape: tuple):
    def load(st) -> np.ndarray:
        data = st.load(src)
        if n > 1:                               # Granite's fused gate/up: rows [gate; up]
            data = np.split(data, n)[k]
        if spec.arch == "qwen35":
            data = _tile_value_heads(spec, local, data)
        if local == "ssm_a":                    # float64 exp, then one rounding to f32
            data = -np.exp(data.astype(np.float64))
        data = data.astype(np.float32).reshape(shape)
        if spec.arch == "qwen35" and local in _QWEN35_PLUS_ONE:
            data = data + np.float32(1)
        base = local.split(".")[0]
        if base in ("attn_q", "attn_k") and spec.arch in ("granitehybrid", "nemotron_h"):
            data = _permute(data, spec.n_head if base == "attn_q" else spec.n_kv)
        if spec.scales:
            data = _fold(spec, "output" if local == "output.weight" else base, data)
        return data
    return load


def _tile_value_heads(spec: HybridSpec, local: str, data: np.ndarray) -> np.ndarray:
    """llama.cpp's _reorder_v_heads: Qwen3.5's value heads from grouped by key head
    (k0v0, k0v1, .., k1v0, ..) to tiled (k0v0, k1v0, .., k0v1, ..), so that ggml can broadcast
    the key heads. Rows of the V part of in_proj_qkv and conv1d, of in_proj_z / _a / _b, A_log
    and dt_bias; columns of out_proj."""
    nk, nv = spec.n_group, spec.n_ssm_head
    if nk == nv:
        return data
    dv = spec.d_inner // nv

    def tile(x, axis, hd):
        x = np.moveaxis(x, axis, 0)
        y = x.reshape(nk, nv // nk, hd, *x.shape[1:]).swapaxes(0, 1).reshape(x.shape)
        return np.moveaxis(y, 0, axis)

    if local in ("attn_qkv.weight", "ssm_conv1d.weight"):      # rows [q; k; v]
        qk = 2 * nk * spec.d_state
        return np.concatenate([data[:qk], tile(data[qk:], 0, dv)])
    if local == "attn_gate.weight":
        return tile(data, 0, dv)
    if local in ("ssm_alpha.weight", "ssm_beta.weight", "ssm_a", "ssm_dt.bias"):
        return tile(data, 0, 1)
    if local == "ssm_out.weight":
        return tile(data, 1, dv)
    return data


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: in each head, rows (i, i + hd/2) become (2i, 2i + 1)."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _fold(spec: HybridSpec, base: str, data: np.ndarray) -> np.ndarray:
    """Falcon-H1: the multipliers of tensor `base`, one float32 multiply each (torch's order)."""
    for f in spec.scales.get(base, ()):
        data = data * np.float32(f)
    if base == "ssm_in":                        # rows [z, x, B, C, dt], each with its factor
        di, gs = spec.d_inner, spec.n_group * spec.d_state
        edges = (0, di, 2 * di, 2 * di + gs, 2 * di + 2 * gs, data.shape[0])
        for a, b, f in zip(edges, edges[1:], spec.scales["ssm_in_rows"]):
            data[a:b] *= np.float32(f)
    return data


# ---- keys -------------------------------------------------------------------------------------

class _Keys(dict):
    """GGUFWriter method -> arguments, in the order first set: a key set again keeps its first
    place and takes the new value (GGUFWriter's behaviour, without its warning)."""

    def put(self, method: str, *args) -> None:
        self[method] = args

    # array keys of llama.cpp's gguf-py that older gguf packages have no writer method for
    _ARRAYS = {"add_recurrent_layers": "{arch}.attention.recurrent_layers"}

    def write(self, w: gguf.GGUFWriter) -> None:
        for method, args in self.items():
            if not hasattr(w, method) and method in self._ARRAYS:
                w.add_array(self._ARRAYS[method].format(arch=w.arch), *args)
            else:
                getattr(w, method)(*args)


def write_keys(w: gguf.GGUFWriter, spec: HybridSpec, ftype) -> None:
    """set_gguf_parameters of llama.cpp's class for spec.arch (general.file_type included)."""
    keys = _Keys()
    if spec.arch == "falcon-h1":
        _falcon_keys(keys, spec, ftype)
    elif spec.arch == "lfm2":
        _lfm2_keys(keys, spec, ftype)
    elif spec.arch == "qwen35":
        _qwen35_keys(keys, spec, ftype)
    else:
        _granite_keys(keys, spec, ftype)
    keys.write(w)


def _falcon_keys(k: _Keys, s: HybridSpec, ftype) -> None:
    # Mamba2Model.set_gguf_parameters
    k.put("add_context_length", 2 ** 20)
    k.put("add_embedding_length", s.n_embd)
    k.put("add_feed_forward_length", 0)
    k.put("add_head_count", 0)
    k.put("add_block_count", s.n_layer)
    k.put("add_ssm_conv_kernel", s.d_conv)
    k.put("add_ssm_inner_size", s.d_inner)
    k.put("add_ssm_state_size", s.d_state)
    k.put("add_ssm_time_step_rank", s.n_ssm_head)
    k.put("add_ssm_group_count", s.n_group)
    k.put("add_layer_norm_rms_eps", s.find(["layer_norm_epsilon", "rms_norm_eps"], 1e-5))
    k.put("add_file_type", ftype)
    # FalconH1Model.set_gguf_parameters
    k.put("add_vocab_size", s.cfg["vocab_size"])
    k.put("add_block_count", s.n_layer)
    k.put("add_context_length", s.cfg.get("max_position_embeddings", 0))
    k.put("add_feed_forward_length", s.n_ff)
    k.put("add_head_count", s.n_head)
    k.put("add_head_count_kv", s.n_kv)
    k.put("add_key_length", s.head_dim)
    k.put("add_value_length", s.head_dim)
    k.put("add_rope_freq_base", _rope_params(s.cfg)["rope_theta"])


def _granite_keys(k: _Keys, s: HybridSpec, ftype) -> None:
    """GraniteHybridModel (and NemotronHModel, derived from it) over GraniteMoeModel,
    GraniteModel, LlamaModel and TextModel. GraniteModel drops head_dim from the config first."""
    _text_keys(k, s, ftype)
    k.put("add_vocab_size", s.cfg["vocab_size"])          # before set_vocab pads it
    k.put("add_rope_dimension_count", s.n_embd // s.n_head)
    for method, key in (("add_attention_scale", "attention_multiplier"),
                        ("add_embedding_scale", "embedding_multiplier"),
                        ("add_residual_scale", "residual_multiplier"),
                        ("add_logit_scale", "logits_scaling")):
        if s.cfg.get(key):
            k.put(method, s.cfg[key])
    if s.cfg.get("shared_intermediate_size"):
        k.put("add_expert_shared_feed_forward_length", s.cfg["shared_intermediate_size"])
    k.put("add_ssm_conv_kernel", s.d_conv)
    k.put("add_ssm_state_size", s.d_state)
    k.put("add_ssm_group_count", s.n_group)
    k.put("add_ssm_inner_size", s.d_inner)
    k.put("add_ssm_time_step_rank", s.n_ssm_head)
    if s.cfg.get("attn_rotary_emb"):
        k.put("add_rope_dimension_count", s.cfg["attn_rotary_emb"])
    k.put("add_head_count_kv", [s.n_kv if ATTN in p else 0 for p in s.parts])
    k.put("add_rope_scaling_finetuned", False)       # rope only for Bamba and non-hybrids
    k.put("add_context_length", 2 ** 20)
    if s.arch == "nemotron_h":
        k.put("add_key_length", s.head_dim)
        k.put("add_value_length", s.head_dim)
        k.put("add_feed_forward_length", [s.n_ff if FFN in p else 0 for p in s.parts])
    elif s.n_ff != s.find(["intermediate_size"], s.n_ff):
        print(f"warning: {s.hf_arch}: the FFN size is shared_intermediate_size {s.n_ff}, not "
              f"intermediate_size; writing feed_forward_length {s.n_ff}", file=sys.stderr)
        k.put("add_feed_forward_length", s.n_ff)


def _lfm2_keys(k: _Keys, s: HybridSpec, ftype) -> None:
    """LFM2Model over TextModel; it sets num_key_value_heads to the per-layer list first."""
    _text_keys(k, s, ftype, head_dim=True)
    k.put("add_head_count_kv", [s.n_kv if ATTN in p else 0 for p in s.parts])
    k.put("add_vocab_size", s.cfg["vocab_size"])
    k.put("add_shortconv_l_cache", s.d_conv)
    k.put("add_layer_norm_rms_eps", s.cfg["norm_eps"])
    k.put("add_feed_forward_length", s.n_ff)


def _qwen35_keys(k: _Keys, s: HybridSpec, ftype) -> None:
    """Qwen3_5TextModel: _Qwen35MRopeMixin over Qwen3NextModel over Qwen2MoeModel and TextModel
    (llama.cpp run with --no-mtp: no nextn_predict_layers, no prediction blocks)."""
    _text_keys(k, s, ftype, head_dim=True)
    for method, key in (("add_expert_feed_forward_length", "moe_intermediate_size"),
                        ("add_expert_shared_feed_forward_length",
                         "shared_expert_intermediate_size")):
        if s.cfg.get(key) is not None:
            k.put(method, s.cfg[key])
    k.put("add_ssm_conv_kernel", s.d_conv)
    k.put("add_ssm_state_size", s.d_state)
    k.put("add_ssm_group_count", s.n_group)
    k.put("add_ssm_time_step_rank", s.n_ssm_head)
    k.put("add_ssm_inner_size", s.d_inner)
    k.put("add_recurrent_layers", [SSM in p for p in s.parts])
    k.put("add_full_attention_interval", s.cfg.get("full_attention_interval", 4))
    rope = _rope_params(s.cfg)
    factor = rope.get("partial_rotary_factor", s.cfg.get("partial_rotary_factor", 0.25))
    k.put("add_rope_dimension_count", int(s.head_dim * factor))
    if "mrope_section" not in rope:     # llama.cpp's loader needs the sections
        k.put("add_rope_dimension_sections", [11, 11, 10, 0])


def _text_keys(k: _Keys, s: HybridSpec, ftype, head_dim: bool = False) -> None:
    """TextModel.set_gguf_parameters: each key from the first config key found (head_dim:
    key / value length from a config head_dim, which Granite's classes drop before)."""
    k.put("add_block_count", s.n_layer)
    for method, keys in (
            ("add_context_length", ["max_position_embeddings", "n_ctx", "n_positions", "max_length",
                                    "max_sequence_length", "model_max_length"]),
            ("add_embedding_length", ["hidden_size", "n_embd", "dim"]),
            ("add_feed_forward_length", ["prefix_dense_intermediate_size",
                                         "dense_intermediate_size", "intermediate_size",
                                         "n_inner", "hidden_dim"]),
            ("add_head_count", ["num_attention_heads", "n_head", "n_heads"]),
            ("add_head_count_kv", ["num_key_value_heads", "n_kv_heads"])):
        if (v := s.find(keys)) is not None:
            k.put(method, v)
    if s.cfg.get("is_causal") is False:
        k.put("add_causal_attention", False)
    rope = _rope_params(s.cfg)
    rope = rope.get("full_attention", rope)
    factor, rope_type = rope.get("factor"), rope.get("rope_type")
    if rope_type in ("linear", "yarn") and factor is not None:
        k.put("add_rope_scaling_type", gguf.RopeScalingType(rope_type))
        k.put("add_rope_scaling_factor", factor)
        if rope_type == "yarn":
            k.put("add_rope_scaling_orig_ctx_len", rope["original_max_position_embeddings"])
            for method, names in (("ext_factor", ["extrapolation_factor"]),
                                  ("attn_factor", ["attention_factor", "attn_factor"]),
                                  ("beta_fast", ["beta_fast"]), ("beta_slow", ["beta_slow"])):
                if (v := next((rope[n] for n in names if n in rope), None)) is not None:
                    k.put("add_rope_scaling_yarn_" + method, v)
    elif rope_type in ("su", "longrope"):
        k.put("add_rope_scaling_type", gguf.RopeScalingType.LONGROPE)
    if "mrope_section" in (outer := _rope_params(s.cfg)):     # padded to 4 sections
        k.put("add_rope_dimension_sections", (list(outer["mrope_section"]) + [0] * 4)[:4])
    if rope.get("rope_theta") is not None:
        k.put("add_rope_freq_base", rope["rope_theta"])
    for method, keys in (("add_layer_norm_rms_eps", ["rms_norm_eps", "norm_eps"]),
                         ("add_layer_norm_eps", ["layer_norm_eps", "layer_norm_epsilon",
                                                 "norm_epsilon"]),
                         ("add_expert_count", ["num_local_experts", "num_experts",
                                               "n_routed_experts"]),
                         ("add_expert_used_count", ["num_experts_per_tok",
                                                    "num_experts_per_token", "top_k_experts"])):
        if (v := s.find(keys)) is not None:
            k.put(method, v)
    for method, key in (("add_expert_group_count", "n_group"),
                        ("add_expert_group_used_count", "topk_group")):
        if s.cfg.get(key) is not None:
            k.put(method, s.cfg[key])
    if head_dim and s.cfg.get("head_dim") is not None:
        k.put("add_key_length", s.cfg["head_dim"])
        k.put("add_value_length", s.cfg["head_dim"])
    k.put("add_file_type", ftype)


def _rope_params(cfg: dict) -> dict:
    """TextModel's rope_parameters: rope_parameters / rope_scaling, with rope_theta (and
    rope_type from "type") mirrored in from the top level."""
    rope = dict(cfg.get("rope_parameters", cfg.get("rope_scaling")) or {})
    if "full_attention" not in rope and "sliding_attention" not in rope:
        theta = _find(cfg, ["global_rope_theta", "rope_global_theta", "rope_theta_global",
                            "rope_theta", "rotary_emb_base"])
        if "rope_theta" not in rope and theta is not None:
            rope["rope_theta"] = theta
        if "rope_type" not in rope and rope.get("type") is not None:
            rope["rope_type"] = rope["type"]
    return rope
