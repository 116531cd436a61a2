"""Liquid AI LFM2 (GGUF arch `lfm2`) as a graph: gated short convolutions with a few attention
layers, each layer followed by a SwiGLU feed-forward block. ref: llama.cpp src/models/lfm2.cpp,
transformers modeling_lfm2.py.

Per layer (pre-norm):
    h   = x + mixer(rms_norm(x) * attn_norm)         mixer: short conv or attention
    out = h + ffn(rms_norm(h) * ffn_norm)            SwiGLU
Short conv (d = n_embd, L = shortconv.l_cache, a depthwise causal conv of L taps, no bias):
    B, C, x = in_proj(h)                             {3d, n_t} -> three {d, n_t}
    y = out_proj(C * conv(B * x))                    conv state: the last L-1 values of B * x
Attention: per-head RMS norms of q and k, rope NEOX, 1/sqrt(head_dim). The final norm is named
`token_embd_norm` in the GGUF (llama.cpp's LLM_TENSOR_OUTPUT_NORM_LFM2).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ops
from ..errors import ModelLoadError
from ..memory import HybridMemory
from ..tensor import F16, WEIGHT_TYPES, Tensor
from .common import GraphContext, HParams, load_common, name, weight
from .hybrid import (ATTN, CONV, AttnHParams, attention, load_attention, load_ffn, per_layer,
                     pre_norm_layers)

ARCH = "lfm2"


@dataclass(frozen=True)
class LFM2HParams(AttnHParams):
    l_cache: int = 3             # taps of the short convolution

    @classmethod
    def read(cls, f) -> LFM2HParams:
        a, d = f.arch, HParams.read_common(f)
        kv = per_layer(f, f"{a}.attention.head_count_kv", d["n_layer"]) if d["n_layer"] > 0 else []
        hp = cls(**d, **AttnHParams.read_attention(f, d["n_layer"], [CONV if n == 0 else ATTN for n in kv],
                                                   ops.ROPE_NEOX),
                 l_cache=f.get(f"{a}.shortconv.l_cache", int))
        hp.check(f.path)
        hp.check_attention(f.path)
        if not 2 <= hp.l_cache <= 16:
            raise ModelLoadError(f"{f.path}: shortconv.l_cache {hp.l_cache} not in 2..16")
        if any(n <= 0 for n in hp.n_ff):
            raise ModelLoadError(f"{f.path}: feed_forward_length must be positive in every layer")
        return hp

    @property
    def conv_layers(self) -> list[int]:
        return [il for il, k in enumerate(self.kinds) if k == CONV]

    @property
    def state_bytes_per_sequence(self) -> int:
        return len(self.conv_layers) * 4 * (self.l_cache - 1) * self.n_embd


def read_hparams(f) -> LFM2HParams:
    return LFM2HParams.read(f)


def make_memory(hp: LFM2HParams, n_seq_max: int, n_ctx: int | None = None, kv_type: int = F16):
    return HybridMemory((hp.l_cache - 1, hp.n_embd), None, hp.conv_layers,
                        (hp.head_dim_attn, hp.kv_heads), hp.attn_layers,
                        n_ctx or hp.n_ctx_train, n_seq_max, kv_type)


def load_tensors(f, hp: LFM2HParams) -> dict:
    w = load_common(f, hp, output_norm="token_embd_norm.weight")
    d = hp.n_embd
    for il in range(hp.n_layer):
        p = f"blk.{il}."
        if il in hp.attn_layers:
            load_attention(f, hp, w, il)
            if w[f"{il}.attn_q_norm"] is None or w[f"{il}.attn_k_norm"] is None:
                raise ModelLoadError(f"{f.path}: layer {il} lacks attn_q_norm / attn_k_norm")
        else:
            w[f"{il}.conv_w"] = weight(f, p + "shortconv.conv.weight", (hp.l_cache, d))
            w[f"{il}.in_proj"] = weight(f, p + "shortconv.in_proj.weight", (d, 3 * d), WEIGHT_TYPES)
            w[f"{il}.out_proj"] = weight(f, p + "shortconv.out_proj.weight", (d, d), WEIGHT_TYPES)
        w[f"{il}.ffn_norm"] = weight(f, p + "ffn_norm.weight", (d,))
        load_ffn(f, hp, w, il)
    return w


def short_conv(ctx: GraphContext, cur: Tensor, il: int) -> Tensor:
    """cur: {n_embd, n_t} (normed) => {n_embd, n_t}: the gated short convolution of layer il."""
    w, d, n_t = ctx.w, ctx.hp.n_embd, cur.ne[1]
    bcx = name(ctx.mul_mat(w[f"{il}.in_proj"], cur), "shortconv_in", il)     # {3d, n_t}
    rs = bcx.nb[1]
    b, c, x = (ops.view(bcx, (d, n_t), (4, rs), i * d * 4) for i in range(3))
    bx = name(ops.mul(b, x), "shortconv_bx", il)
    conv_state, _ = ctx.memory.leafs(il)
    y = name(ops.ssm_conv(bx, conv_state, w[f"{il}.conv_w"], None, ctx.seq_info, apply_silu=False),
             "shortconv_conv", il)
    y = name(ops.mul(c, y), "shortconv_gate", il)
    return name(ctx.mul_mat(w[f"{il}.out_proj"], y), "shortconv_out", il)


def build_graph(ctx: GraphContext) -> Tensor:
    kq_scale = 1.0 / ctx.hp.head_dim_attn ** 0.5
    return pre_norm_layers(ctx, lambda ctx, x, il: attention(ctx, x, il, kq_scale)
                           if il in ctx.hp.attn_layers else short_conv(ctx, x, il))
