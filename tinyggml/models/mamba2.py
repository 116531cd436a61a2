"""Mamba-2 (incl. Mamba-Codestral shapes) as a graph. ref: llama.cpp src/models/mamba2.cpp,
mamba_ssm/modules/mamba2.py, arXiv 2405.21060.

Glossary (ggml order, n_t = tokens in the ubatch, all sequences back to back):
    n_embd   d_model           d_inner  n_head * head_dim
    n_head   H (time_step_rank in GGUF)  head_dim  P
    d_state  N                 n_group  G: B and C are shared by n_head/n_group heads
    ch       conv channels = d_inner + 2*n_group*d_state (x, B, C go through the conv together)
Gated norm (norm_before_gate=False): y = rmsnorm_per_group(y * silu(z)) * ssm_norm.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ops
from ..errors import ModelLoadError
from ..tensor import WEIGHT_TYPES, Tensor
from .common import (GraphContext, SSMHParams, load_common, name, pre_norm_stack,
                     recurrent_memory, weight)

ARCH = "mamba2"


@dataclass(frozen=True)
class Mamba2HParams(SSMHParams):
    n_head: int
    n_group: int = 1

    @classmethod
    def read(cls, f) -> Mamba2HParams:
        a = f.arch
        hp = cls(**SSMHParams.read_ssm(f), n_head=f.get(f"{a}.ssm.time_step_rank", int),
                 n_group=f.get(f"{a}.ssm.group_count", int, 1))
        hp.check(f.path)
        if hp.n_head <= 0 or hp.d_inner % hp.n_head or hp.n_group <= 0 or hp.n_head % hp.n_group:
            raise ModelLoadError(f"{f.path}: inconsistent Mamba-2 sizes: d_inner {hp.d_inner}, "
                                 f"heads {hp.n_head}, groups {hp.n_group}")
        return hp

    @property
    def head_dim(self) -> int:
        return self.d_inner // self.n_head

    @property
    def conv_channels(self) -> int:
        return self.d_inner + 2 * self.n_group * self.d_state

    def state_shapes(self) -> tuple[tuple, tuple]:
        """Per sequence and layer, ggml order: conv {d_conv-1, ch}, ssm {d_state, head_dim, n_head}."""
        return (self.d_conv - 1, self.conv_channels), (self.d_state, self.head_dim, self.n_head)


def read_hparams(f) -> Mamba2HParams:
    return Mamba2HParams.read(f)


make_memory = recurrent_memory


def load_tensors(f, hp: Mamba2HParams) -> dict:
    w = load_common(f, hp)
    for il in range(hp.n_layer):
        load_layer(f, hp, w, il)
    return w


def load_layer(f, hp: Mamba2HParams, w: dict, il: int):
    """Layer il's Mamba-2 mixer weights into w (hybrid models load theirs with it too)."""
    di, ch, nh, ng = hp.d_inner, hp.conv_channels, hp.n_head, hp.n_group
    p = f"blk.{il}."
    w[f"{il}.ssm_in"] = weight(f, p + "ssm_in.weight", (hp.n_embd, di + ch + nh), WEIGHT_TYPES)
    w[f"{il}.conv_w"] = weight(f, p + "ssm_conv1d.weight", (hp.d_conv, ch))
    w[f"{il}.conv_b"] = (weight(f, p + "ssm_conv1d.bias", (ch,))      # optional in hybrids
                         if f.has(p + "ssm_conv1d.bias") or hp.arch == ARCH else None)
    w[f"{il}.ssm_dt_b"] = weight(f, p + "ssm_dt.bias", (nh,))
    w[f"{il}.ssm_a"] = weight(f, p + "ssm_a", (1, nh))
    w[f"{il}.ssm_d"] = weight(f, p + "ssm_d", (1, nh))
    w[f"{il}.ssm_norm"] = (weight(f, p + "ssm_norm.weight", (di // ng, ng))  # optional: Falcon-H1
                           if f.has(p + "ssm_norm.weight") or hp.arch == ARCH else None)
    w[f"{il}.ssm_out"] = weight(f, p + "ssm_out.weight", (di, hp.n_embd), WEIGHT_TYPES)


def build_block(ctx: GraphContext, cur: Tensor, il: int) -> Tensor:
    """cur: {n_embd, n_t} (normed) => {n_embd, n_t}"""
    hp, w = ctx.hp, ctx.w
    di, ds, nh, ng, hd = hp.d_inner, hp.d_state, hp.n_head, hp.n_group, hp.head_dim
    ch = hp.conv_channels
    n_t = cur.ne[1]
    conv_state, ssm_state = ctx.memory.leafs(il)
    # {n_embd, d_inner + ch + n_head} @ {n_embd, n_t} => {d_inner + ch + n_head, n_t}
    zxbcdt = name(ctx.mul_mat(w[f"{il}.ssm_in"], cur), "ssm_in", il)
    rs = zxbcdt.nb[1]
    # z per group of channels, as the gated norm reads it: {d_inner/n_group, n_group, n_t}
    z = name(ops.view(zxbcdt, (di // ng, ng, n_t), (4, di // ng * 4, rs), 0), "z", il)
    xbc = name(ops.view(zxbcdt, (ch, n_t), (4, rs), di * 4), "xBC", il)          # {ch, n_t}
    dt = name(ops.view(zxbcdt, (nh, n_t), (4, rs), (di + ch) * 4), "dt", il)     # {n_head, n_t}
    # causal conv + bias + SiLU over x, B and C; conv state in place => {ch, n_t}
    xbc = name(ops.ssm_conv(xbc, conv_state, w[f"{il}.conv_w"], w[f"{il}.conv_b"], ctx.seq_info),
               "ssm_conv", il)
    x = name(ops.view(xbc, (hd, nh, n_t), (4, hd * 4, xbc.nb[1]), 0), "x", il)   # {head_dim, n_head, n_t}
    B = name(ops.view(xbc, (ds, ng, n_t), (4, ds * 4, xbc.nb[1]), di * 4), "B", il)  # {d_state, n_group, n_t}
    C = name(ops.view(xbc, (ds, ng, n_t), (4, ds * 4, xbc.nb[1]), (di + ng * ds) * 4), "C", il)
    dt = name(ops.add(dt, w[f"{il}.ssm_dt_b"]), "ssm_dt_b", il)         # {n_head, n_t}
    # scalar A per head => y {head_dim, n_head, n_t}; chunked or recurrent by ctx.opts
    y = ops.ssm_scan(ssm_state, x, dt, w[f"{il}.ssm_a"], B, C, ops.reshape(w[f"{il}.ssm_d"], nh),
                     ctx.seq_info, ctx.opts)
    y = name(y, "ssm_scan", il)
    # gated RMS norm per group of channels, rms_norm(y * silu(z)) * ssm_norm, in one pass:
    # {d_inner/n_group, n_group, n_t}
    if w[f"{il}.ssm_norm"] is None:          # no gated norm (Falcon-H1 without mamba_rms_norm)
        y = name(ops.gate_silu(ops.reshape(y, di // ng, ng, n_t), z), "ssm_gate", il)
    else:
        y = name(ops.rms_norm(ops.reshape(y, di // ng, ng, n_t), hp.eps, w[f"{il}.ssm_norm"], gate=z),
                 "ssm_norm", il)
    # {d_inner, n_embd} @ {d_inner, n_t} => {n_embd, n_t}
    return name(ctx.mul_mat(w[f"{il}.ssm_out"], ops.reshape(y, di, n_t)), "ssm_out", il)


def build_graph(ctx: GraphContext) -> Tensor:
    """Embeddings -> n_layer x (x + block(rms_norm(x) * attn_norm)) -> final norm -> logits."""
    return pre_norm_stack(ctx, build_block)
