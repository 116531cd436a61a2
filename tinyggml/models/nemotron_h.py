"""NVIDIA Nemotron-H (GGUF arch `nemotron_h`, dense variants) as a graph: each layer is one of
a Mamba-2 mixer, an attention mixer (no position embedding) or a squared-ReLU MLP, pre-normed,
with a residual. ref: llama.cpp src/models/nemotron-h.cpp, transformers modeling_nemotron_h.py.

Layer kinds (HF hybrid_override_pattern "M" / "*" / "-") come from two per-layer arrays:
attention.head_count_kv 0 and feed_forward_length 0 => Mamba-2; feed_forward_length 0 =>
attention; otherwise the MLP. Per layer:
    out = x + mixer(rms_norm(x) * attn_norm)     mixer: Mamba-2 | attention | down(relu(up(h))^2)
The mixture-of-experts variant (nemotron_h_moe) is a different architecture and not supported.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ops
from ..tensor import Tensor
from . import mamba2
from .common import GraphContext, load_common, name
from .hybrid import (ATTN, FFN, SSM, HybridHParams, attention, ffn, hybrid_memory,
                     load_attention, load_ffn, per_layer)

ARCH = "nemotron_h"


@dataclass(frozen=True)
class NemotronHHParams(HybridHParams):
    attention_scale: float = 0.0

    @classmethod
    def read(cls, f) -> NemotronHHParams:
        a = f.arch
        n_layer = f.get(f"{a}.block_count", int)
        kv = per_layer(f, f"{a}.attention.head_count_kv", n_layer)
        ff = per_layer(f, f"{a}.feed_forward_length", n_layer, 0)
        kinds = [SSM if k == 0 and n == 0 else ATTN if n == 0 else FFN for k, n in zip(kv, ff)]
        hp = cls(**HybridHParams.read_hybrid(f, kinds=kinds, rope_type=None),
                 attention_scale=f.get(f"{a}.attention.scale", float, 0.0))
        hp.check(f.path)
        return hp


def read_hparams(f) -> NemotronHHParams:
    return NemotronHHParams.read(f)


make_memory = hybrid_memory


def load_tensors(f, hp: NemotronHHParams) -> dict:
    w = load_common(f, hp)
    for il, kind in enumerate(hp.kinds):
        if kind == SSM:
            mamba2.load_layer(f, hp, w, il)
        elif kind == ATTN:
            load_attention(f, hp, w, il)
        else:
            load_ffn(f, hp, w, il, gated=False)
    return w


def build_graph(ctx: GraphContext) -> Tensor:
    hp, w = ctx.hp, ctx.w
    kq_scale = hp.attention_scale or 1.0 / hp.head_dim_attn ** 0.5
    cur = ctx.embed()                                                   # {n_embd, n_t}
    for il, kind in enumerate(hp.kinds):
        x = name(ops.rms_norm(cur, hp.eps, w[f"{il}.attn_norm"]), "attn_norm", il)
        if kind == SSM:
            x = mamba2.build_block(ctx, x, il)
        elif kind == ATTN:
            x = attention(ctx, x, il, kq_scale)
        else:
            x = ffn(ctx, x, il, act="relu_sqr")
        cur = name(ops.add(x, cur), "l_out", il)
    return ctx.head(cur)
