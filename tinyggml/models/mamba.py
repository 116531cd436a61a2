"""Mamba-1 (and Falcon-Mamba) as a graph. ref: llama.cpp src/models/mamba-base.cpp, mamba_ssm.

Glossary (ggml order, n_t = tokens in the ubatch, all sequences back to back):
    n_embd   d_model          d_inner  E*d_model (expand E = 2)
    d_state  N (paper)        dt_rank  R, rank of the dt projection
    d_conv   kernel of the causal depthwise conv
Falcon-Mamba (`mamba.ssm.dt_b_c_rms`): weightless RMS norm on dt, B and C after x_proj.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ops
from ..tensor import WEIGHT_TYPES, Tensor
from .common import (GraphContext, SSMHParams, load_common, name, pre_norm_stack,
                     recurrent_memory, weight)

ARCH = "mamba"


@dataclass(frozen=True)
class MambaHParams(SSMHParams):
    dt_rank: int
    dt_b_c_rms: bool = False    # Falcon-Mamba

    @classmethod
    def read(cls, f) -> MambaHParams:
        a = f.arch
        hp = cls(**SSMHParams.read_ssm(f), dt_rank=f.get(f"{a}.ssm.time_step_rank", int),
                 dt_b_c_rms=f.get(f"{a}.ssm.dt_b_c_rms", bool, False))
        hp.check(f.path, positive=("dt_rank",))
        return hp

    def state_shapes(self) -> tuple[tuple, tuple]:
        """Per sequence and layer, ggml order: conv {d_conv-1, d_inner}, ssm {d_state, 1, d_inner}
        (a head of size 1 per channel)."""
        return (self.d_conv - 1, self.d_inner), (self.d_state, 1, self.d_inner)


def read_hparams(f) -> MambaHParams:
    return MambaHParams.read(f)


make_memory = recurrent_memory


def load_tensors(f, hp: MambaHParams) -> dict:
    w = load_common(f, hp)
    di, ds, r = hp.d_inner, hp.d_state, hp.dt_rank
    for il in range(hp.n_layer):
        p = f"blk.{il}."
        w[f"{il}.ssm_in"] = weight(f, p + "ssm_in.weight", (hp.n_embd, 2 * di), WEIGHT_TYPES)
        w[f"{il}.conv_w"] = weight(f, p + "ssm_conv1d.weight", (hp.d_conv, di))
        w[f"{il}.conv_b"] = weight(f, p + "ssm_conv1d.bias", (di,))
        w[f"{il}.ssm_x"] = weight(f, p + "ssm_x.weight", (di, r + 2 * ds), WEIGHT_TYPES)
        w[f"{il}.ssm_dt"] = weight(f, p + "ssm_dt.weight", (r, di), WEIGHT_TYPES)
        w[f"{il}.ssm_dt_b"] = weight(f, p + "ssm_dt.bias", (di,))
        w[f"{il}.ssm_a"] = weight(f, p + "ssm_a", (ds, di))
        w[f"{il}.ssm_d"] = weight(f, p + "ssm_d", (di,))
        w[f"{il}.ssm_out"] = weight(f, p + "ssm_out.weight", (di, hp.n_embd), WEIGHT_TYPES)
    return w


def build_block(ctx: GraphContext, cur: Tensor, il: int) -> Tensor:
    """cur: {n_embd, n_t} (normed) => {n_embd, n_t}. With A per state element, the scan always
    goes token by token (the graph options' scan choice is Mamba-2's)."""
    hp, w = ctx.hp, ctx.w
    di, ds, r = hp.d_inner, hp.d_state, hp.dt_rank
    n_t = cur.ne[1]
    conv_state, ssm_state = ctx.memory.leafs(il)
    # {n_embd, 2*d_inner} @ {n_embd, n_t} => {2*d_inner, n_t}
    xz = name(ctx.mul_mat(w[f"{il}.ssm_in"], cur), "ssm_in", il)
    x = name(ops.view(xz, (di, n_t), (4, xz.nb[1]), 0), "x", il)         # {d_inner, n_t}
    z = name(ops.view(xz, (di, n_t), (4, xz.nb[1]), di * 4), "z", il)    # {d_inner, n_t}
    # causal conv + bias + SiLU, conv state read and written in place => {d_inner, n_t}
    x = name(ops.ssm_conv(x, conv_state, w[f"{il}.conv_w"], w[f"{il}.conv_b"], ctx.seq_info),
             "ssm_conv", il)
    # {d_inner, dt_rank + 2*d_state} @ {d_inner, n_t} => {dt_rank + 2*d_state, n_t}
    x_db = name(ctx.mul_mat(w[f"{il}.ssm_x"], x), "ssm_x", il)
    dt = name(ops.view(x_db, (r, n_t), (4, x_db.nb[1]), 0), "dt", il)   # {dt_rank, n_t}
    B = name(ops.view(x_db, (ds, 1, n_t), (4, ds * 4, x_db.nb[1]), r * 4), "B", il)  # {d_state, 1, n_t}
    C = name(ops.view(x_db, (ds, 1, n_t), (4, ds * 4, x_db.nb[1]), (r + ds) * 4), "C", il)
    if hp.dt_b_c_rms:
        dt = name(ops.rms_norm(dt, hp.eps), "dt_norm", il)
        B = name(ops.rms_norm(B, hp.eps), "b_norm", il)
        C = name(ops.rms_norm(C, hp.eps), "c_norm", il)
    # {dt_rank, d_inner} @ {dt_rank, n_t} => {d_inner, n_t}
    dt = name(ctx.mul_mat(w[f"{il}.ssm_dt"], dt), "ssm_dt", il)
    dt = name(ops.add(dt, w[f"{il}.ssm_dt_b"]), "ssm_dt_b", il)
    # heads of size 1: x {1, d_inner, n_t}, A {d_state, d_inner} => y {1, d_inner, n_t}
    y = ops.ssm_scan(ssm_state, ops.reshape(x, 1, di, n_t), dt, w[f"{il}.ssm_a"], B, C,
                     w[f"{il}.ssm_d"], ctx.seq_info, ctx.opts)
    y = name(y, "ssm_scan", il)
    y = name(ops.gate_silu(ops.reshape(y, di, n_t), z), "ssm_gate", il)   # y * silu(z)
    # {d_inner, n_embd} @ {d_inner, n_t} => {n_embd, n_t}
    return name(ctx.mul_mat(w[f"{il}.ssm_out"], y), "ssm_out", il)


def build_graph(ctx: GraphContext) -> Tensor:
    """Embeddings -> n_layer x (x + block(rms_norm(x) * attn_norm)) -> final norm -> logits."""
    return pre_norm_stack(ctx, build_block)
