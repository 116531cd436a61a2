"""Qwen3.5 (GGUF arch `qwen35`, the dense models) as a graph: gated delta-rule linear attention
(three layers in four) beside gated softmax attention, each layer followed by a SwiGLU
feed-forward block. ref: llama.cpp src/models/qwen35.cpp, transformers modeling_qwen3_5.py.

Per layer (pre-norm; the converter stores Qwen's zero-centred norm weights with the 1 added):
    h   = x + mixer(rms_norm(x) * attn_norm)
    out = h + ffn(rms_norm(h) * post_attention_norm)
Linear attention (d_k = ssm.state_size, n_k = ssm.group_count key heads, n_v = ssm.time_step_rank
value heads of d_v = ssm.inner_size / n_v):
    qkv = attn_qkv(h) -> causal conv (ssm_conv1d, no bias) + SiLU -> q, k {d_k, n_k}, v {d_v, n_v}
    y   = gated_delta(q, k, v, alpha = ssm_alpha(h), b = ssm_beta(h), ssm_a, ssm_dt.bias)
    out = ssm_out(rms_norm(y) * ssm_norm * silu(attn_gate(h)))     norm per value head
Attention: attn_q gives each head's query and output gate; per-head RMS norms of q and k, rope
NEOX over rope.dimension_count dims (the multimodal sections coincide for text positions),
1/sqrt(head_dim); the output times sigmoid(gate). Multi-token-prediction blocks
(nextn_predict_layers) follow the decoder blocks in the file and are not run.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ops
from ..errors import ModelLoadError
from ..memory import HybridMemory
from ..tensor import F16, F32, WEIGHT_TYPES, Tensor
from .common import GraphContext, HParams, load_common, name, weight
from .hybrid import ATTN, SSM, AttnHParams, attention, load_attention, load_ffn, pre_norm_layers

ARCH = "qwen35"
L2_EPS = 1e-6          # the q / k L2 norm's epsilon (transformers' l2norm)


@dataclass(frozen=True)
class Qwen35HParams(AttnHParams):
    d_conv: int = 4
    d_k: int = 0           # key (and query) head size
    n_k: int = 0           # key heads
    n_v: int = 0           # value heads
    d_inner: int = 0       # n_v * d_v

    @classmethod
    def read(cls, f) -> Qwen35HParams:
        a, d = f.arch, HParams.read_common(f)
        n_mtp = f.get(f"{a}.nextn_predict_layers", int, 0)
        n_layer = d["n_layer"] - n_mtp
        if n_mtp < 0 or n_layer <= 0:
            raise ModelLoadError(f"{f.path}: {d['n_layer']} blocks, {n_mtp} of them prediction heads")
        rec = f.value(f"{a}.attention.recurrent_layers")
        if rec is None:
            every = f.get(f"{a}.full_attention_interval", int, 4)
            if every <= 0:
                raise ModelLoadError(f"{f.path}: full_attention_interval {every}")
            rec = [(il + 1) % every != 0 for il in range(n_layer)]
        elif not isinstance(rec, (list, tuple)) or len(rec) < n_layer:
            raise ModelLoadError(f"{f.path}: attention.recurrent_layers should hold {n_layer} flags")
        kinds = [SSM if rec[il] else ATTN for il in range(n_layer)]
        hp = cls(**dict(d, n_layer=n_layer),
                 **AttnHParams.read_attention(f, n_layer, kinds, ops.ROPE_NEOX),
                 d_conv=f.get(f"{a}.ssm.conv_kernel", int), d_k=f.get(f"{a}.ssm.state_size", int),
                 n_k=f.get(f"{a}.ssm.group_count", int), n_v=f.get(f"{a}.ssm.time_step_rank", int),
                 d_inner=f.get(f"{a}.ssm.inner_size", int))
        hp.check(f.path)
        hp.check_attention(f.path)
        if not 2 <= hp.d_conv <= 16:
            raise ModelLoadError(f"{f.path}: ssm.conv_kernel {hp.d_conv} not in 2..16")
        if (hp.d_k <= 0 or hp.n_k <= 0 or hp.n_v <= 0 or hp.n_v % hp.n_k or hp.d_inner <= 0
                or hp.d_inner % hp.n_v):
            raise ModelLoadError(f"{f.path}: linear attention sizes: {hp.n_k} key heads of {hp.d_k}, "
                                 f"{hp.n_v} value heads, inner size {hp.d_inner}")
        if any(n <= 0 for n in hp.n_ff):
            raise ModelLoadError(f"{f.path}: feed_forward_length must be positive")
        if f.has("blk.0.ffn_gate_inp.weight"):
            raise ModelLoadError(f"{f.path}: the mixture-of-experts Qwen3.5 models are not supported yet")
        return hp

    @property
    def d_v(self) -> int:
        return self.d_inner // self.n_v

    @property
    def conv_channels(self) -> int:
        return 2 * self.n_k * self.d_k + self.d_inner

    @property
    def ssm_layers(self) -> list[int]:
        return [il for il, k in enumerate(self.kinds) if k == SSM]

    @property
    def state_bytes_per_sequence(self) -> int:
        per = (self.d_conv - 1) * self.conv_channels + self.d_k * self.d_inner
        return len(self.ssm_layers) * 4 * per


def read_hparams(f) -> Qwen35HParams:
    return Qwen35HParams.read(f)


def make_memory(hp: Qwen35HParams, n_seq_max: int, n_ctx: int | None = None, kv_type: int = F16):
    return HybridMemory((hp.d_conv - 1, hp.conv_channels), (hp.d_k, hp.d_v, hp.n_v), hp.ssm_layers,
                        (hp.head_dim_attn, hp.kv_heads), hp.attn_layers,
                        n_ctx or hp.n_ctx_train, n_seq_max, kv_type)


def load_tensors(f, hp: Qwen35HParams) -> dict:
    w = load_common(f, hp)
    d, nv = hp.n_embd, hp.n_v
    for il in range(hp.n_layer):
        p = f"blk.{il}."
        if il in hp.attn_layers:
            load_attention(f, hp, w, il, q_gate=True)
            if w[f"{il}.attn_q_norm"] is None or w[f"{il}.attn_k_norm"] is None:
                raise ModelLoadError(f"{f.path}: layer {il} lacks attn_q_norm / attn_k_norm")
        else:
            for key, gguf_name, ne, types in (
                    ("qkv", "attn_qkv.weight", (d, hp.conv_channels), WEIGHT_TYPES),
                    ("z", "attn_gate.weight", (d, hp.d_inner), WEIGHT_TYPES),
                    ("beta", "ssm_beta.weight", (d, nv), WEIGHT_TYPES),
                    ("alpha", "ssm_alpha.weight", (d, nv), WEIGHT_TYPES),
                    ("conv_w", "ssm_conv1d.weight", (hp.d_conv, hp.conv_channels), (F32,)),
                    ("dt_b", "ssm_dt.bias", (nv,), (F32,)), ("ssm_a", "ssm_a", (nv,), (F32,)),
                    ("ssm_norm", "ssm_norm.weight", (hp.d_v,), (F32,)),
                    ("ssm_out", "ssm_out.weight", (hp.d_inner, d), WEIGHT_TYPES)):
                w[f"{il}.{key}"] = weight(f, p + gguf_name, ne, types)
        w[f"{il}.ffn_norm"] = weight(f, p + "post_attention_norm.weight", (d,))
        load_ffn(f, hp, w, il)
    return w


def linear_attention(ctx: GraphContext, cur: Tensor, il: int) -> Tensor:
    """cur: {n_embd, n_t} (normed) => {n_embd, n_t}: the gated delta-rule block of layer il."""
    hp, w = ctx.hp, ctx.w
    dk, nk, dv, nv, n_t = hp.d_k, hp.n_k, hp.d_v, hp.n_v, cur.ne[1]
    conv_state, ssm_state = ctx.memory.leafs(il)
    qkv = name(ctx.mul_mat(w[f"{il}.qkv"], cur), "linear_attn_qkv_mixed", il)  # {conv ch, n_t}
    z = name(ctx.mul_mat(w[f"{il}.z"], cur), "z", il)                          # {d_inner, n_t}
    b = name(ctx.mul_mat(w[f"{il}.beta"], cur), "beta", il)                     # {n_v, n_t}
    alpha = name(ctx.mul_mat(w[f"{il}.alpha"], cur), "alpha", il)               # {n_v, n_t}
    qkv = name(ops.ssm_conv(qkv, conv_state, w[f"{il}.conv_w"], None, ctx.seq_info), "conv_output", il)
    rs = qkv.nb[1]
    q = ops.view(qkv, (dk, nk, n_t), (4, dk * 4, rs), 0)
    k = ops.view(qkv, (dk, nk, n_t), (4, dk * 4, rs), nk * dk * 4)
    v = ops.view(qkv, (dv, nv, n_t), (4, dv * 4, rs), 2 * nk * dk * 4)
    y = name(ops.gated_delta(ssm_state, q, k, v, alpha, b, w[f"{il}.ssm_a"], w[f"{il}.dt_b"],
                             ctx.seq_info, L2_EPS, ctx.opts), "gated_delta", il)          # {d_v, n_v, n_t}
    y = name(ops.rms_norm(y, hp.eps, w[f"{il}.ssm_norm"]), "ssm_norm", il)
    y = name(ops.gate_silu(y, ops.reshape(z, dv, nv, n_t)), "ssm_gate", il)
    return name(ctx.mul_mat(w[f"{il}.ssm_out"], ops.reshape(y, hp.d_inner, n_t)), "linear_attn_out", il)


def build_graph(ctx: GraphContext) -> Tensor:
    kq_scale = 1.0 / ctx.hp.head_dim_attn ** 0.5
    return pre_norm_layers(ctx, lambda ctx, x, il: attention(ctx, x, il, kq_scale, q_gate=True)
                           if il in ctx.hp.attn_layers else linear_attention(ctx, x, il))
