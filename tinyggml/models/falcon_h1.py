"""TII Falcon-H1 (GGUF arch `falcon-h1`) as a graph: in every layer an attention mixer and a
Mamba-2 mixer read the same normed input side by side, their outputs added to the residual,
then a SwiGLU feed-forward block. ref: llama.cpp src/models/falcon-h1.cpp, transformers
modeling_falcon_h1.py.

Per layer:
    h   = rms_norm(x) * attn_norm
    x   = x + attention(h) + mamba2(h)            attention: rope NEOX, 1/sqrt(head_dim)
    out = x + ffn(rms_norm(x) * ffn_norm)         SwiGLU
Falcon-H1's muP multipliers (embedding, attention in/out, key, SSM in/out and the per-segment
ssm_in scales, MLP gate/down, LM head) are folded into the weights by llama.cpp's converter:
the graph applies none. Its FFN norm is `blk.N.ffn_norm` without a `.weight` suffix, as the
converter names it; the Mamba-2 gated norm is optional (mamba_rms_norm).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ops
from ..tensor import Tensor
from . import mamba2
from .common import GraphContext, load_common, name, weight
from .hybrid import BOTH, HybridHParams, attention, ffn, hybrid_memory, load_attention, load_ffn

ARCH = "falcon-h1"


@dataclass(frozen=True)
class FalconH1HParams(HybridHParams):
    @classmethod
    def read(cls, f) -> FalconH1HParams:
        n_layer = f.get(f"{f.arch}.block_count", int)
        hp = cls(**HybridHParams.read_hybrid(f, kinds=[BOTH] * max(n_layer, 0), rope_type=ops.ROPE_NEOX))
        hp.check(f.path)
        return hp


def read_hparams(f) -> FalconH1HParams:
    return FalconH1HParams.read(f)


make_memory = hybrid_memory


def load_tensors(f, hp: FalconH1HParams) -> dict:
    w = load_common(f, hp)
    for il in range(hp.n_layer):
        mamba2.load_layer(f, hp, w, il)
        load_attention(f, hp, w, il)
        key = f"blk.{il}.ffn_norm"
        w[f"{il}.ffn_norm"] = weight(f, key if f.has(key) else key + ".weight", (hp.n_embd,))
        load_ffn(f, hp, w, il)
    return w


def build_graph(ctx: GraphContext) -> Tensor:
    hp, w = ctx.hp, ctx.w
    kq_scale = 1.0 / hp.head_dim_attn ** 0.5
    cur = ctx.embed()                                                   # {n_embd, n_t}
    for il in range(hp.n_layer):
        h = name(ops.rms_norm(cur, hp.eps, w[f"{il}.attn_norm"]), "attn_norm", il)
        a = attention(ctx, h, il, kq_scale)
        s = mamba2.build_block(ctx, h, il)
        cur = name(ops.add(ops.add(a, s), cur), "ffn_inp", il)
        x = name(ops.rms_norm(cur, hp.eps, w[f"{il}.ffn_norm"]), "ffn_norm", il)
        cur = name(ops.add(ffn(ctx, x, il), cur), "l_out", il)
    return ctx.head(cur)
