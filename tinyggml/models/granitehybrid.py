"""IBM Granite-4.0-H (GGUF arch `granitehybrid`; also Bamba) as a graph: Mamba-2 layers with a
few attention layers, each layer followed by a SwiGLU feed-forward block. ref: llama.cpp
src/models/granite-hybrid.cpp, transformers modeling_granitemoehybrid.py.

Per layer (pre-norm, residuals scaled by residual_scale):
    h   = x + residual_scale * mixer(rms_norm(x) * attn_norm)      mixer: Mamba-2 or attention
    out = h + residual_scale * ffn(rms_norm(h) * ffn_norm)          SwiGLU: down(silu(gate) * up)
Embeddings are scaled by embedding_scale, logits divided by logit_scale, attention scores
scaled by attention.scale (default 1/sqrt(head_dim)). Granite-4.0-H has no position embedding
in its attention layers (rope.scaling.finetuned false, as llama.cpp's converter writes it);
Bamba has rope (llama's pairs). A scale key that is absent or 0 does not apply.
The mixture-of-experts variants (ffn_gate_inp) are not supported yet.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ops
from ..errors import ModelLoadError
from ..tensor import Tensor
from . import mamba2
from .common import GraphContext, load_common, name, weight
from .hybrid import HybridHParams, attention, ffn, hybrid_memory, load_attention, load_ffn

ARCH = "granitehybrid"


@dataclass(frozen=True)
class GraniteHybridHParams(HybridHParams):
    embedding_scale: float = 0.0
    residual_scale: float = 0.0
    attention_scale: float = 0.0
    logit_scale: float = 0.0

    @classmethod
    def read(cls, f) -> GraniteHybridHParams:
        a = f.arch
        rope = f.get(f"{a}.rope.scaling.finetuned", bool, True)     # llama.cpp: the rope switch
        hp = cls(**HybridHParams.read_hybrid(f, rope_type=ops.ROPE_NORM if rope else None),
                 embedding_scale=f.get(f"{a}.embedding_scale", float, 0.0),
                 residual_scale=f.get(f"{a}.residual_scale", float, 0.0),
                 attention_scale=f.get(f"{a}.attention.scale", float, 0.0),
                 logit_scale=f.get(f"{a}.logit_scale", float, 0.0))
        hp.check(f.path)
        if f.has("blk.0.ffn_gate_inp.weight"):
            raise ModelLoadError(f"{f.path}: the mixture-of-experts Granite-4.0-H variants are not "
                                 f"supported yet (dense ones are)")
        return hp


def read_hparams(f) -> GraniteHybridHParams:
    return GraniteHybridHParams.read(f)


make_memory = hybrid_memory


def load_tensors(f, hp: GraniteHybridHParams) -> dict:
    w = load_common(f, hp)
    for il in range(hp.n_layer):
        if il in hp.attn_layers:
            load_attention(f, hp, w, il)
        else:
            mamba2.load_layer(f, hp, w, il)
        w[f"{il}.ffn_norm"] = weight(f, f"blk.{il}.ffn_norm.weight", (hp.n_embd,))
        load_ffn(f, hp, w, il)
    return w


def _scaled(t: Tensor, s: float) -> Tensor:
    return ops.scale(t, s) if s else t


def build_graph(ctx: GraphContext) -> Tensor:
    hp, w = ctx.hp, ctx.w
    kq_scale = hp.attention_scale or 1.0 / hp.head_dim_attn ** 0.5
    cur = _scaled(ctx.embed(), hp.embedding_scale)                      # {n_embd, n_t}
    for il in range(hp.n_layer):
        x = name(ops.rms_norm(cur, hp.eps, w[f"{il}.attn_norm"]), "attn_norm", il)
        if il in hp.attn_layers:
            x = attention(ctx, x, il, kq_scale)
        else:
            x = mamba2.build_block(ctx, x, il)
        h = name(ops.add(_scaled(x, hp.residual_scale), cur), "ffn_inp", il)
        x = name(ops.rms_norm(h, hp.eps, w[f"{il}.ffn_norm"]), "ffn_norm", il)
        cur = name(ops.add(_scaled(ffn(ctx, x, il), hp.residual_scale), h), "l_out", il)
    logits = ctx.head(cur)
    if ctx.n_out and hp.logit_scale:
        logits = name(ops.scale(logits, 1.0 / hp.logit_scale), "result_output")
    return logits
