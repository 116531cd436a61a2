"""Pieces shared by Mamba-1 and Mamba-2: embeddings, pre-norm + residual, the LM head."""
from __future__ import annotations

from .. import ops
from ..gguf_file import MATMUL_TYPES, GGUFModel, HParams
from ..tensor import F32, WEIGHT, Tensor, leaf


def name(t: Tensor, what: str, il: int | None = None) -> Tensor:
    """Name a node like llama.cpp's cb(): "blk.3.ssm_scan" or "result_norm" (and the activation
    quantization a quantized mul_mat inserted before it: "blk.3.ssm_in.act")."""
    t.name = what if il is None else f"blk.{il}.{what}"
    for s in t.src:
        if s is not None and s.op == ops.Op.QUANTIZE and not s.name:
            s.name = f"{t.name}.act"
    return t


def weight(f: GGUFModel, key: str, ne: tuple, types=(F32,)) -> Tensor:
    """A WEIGHT leaf over the mmapped data of GGUF tensor `key`, shape-checked."""
    ttype, data = f.weight(key, ne, types)
    return leaf(ttype, ne, key, WEIGHT, data=data)


def load_common(f: GGUFModel, hp: HParams) -> dict:
    w = {"token_embd": weight(f, "token_embd.weight", (hp.n_embd, hp.n_vocab), MATMUL_TYPES),
         "output_norm": weight(f, "output_norm.weight", (hp.n_embd,))}
    # tied LM head: `output` absent means token_embd is reused
    w["output"] = (weight(f, "output.weight", (hp.n_embd, hp.n_vocab), MATMUL_TYPES)
                   if f.has("output.weight") else w["token_embd"])
    for il in range(hp.n_layer):
        w[f"{il}.attn_norm"] = weight(f, f"blk.{il}.attn_norm.weight", (hp.n_embd,))
    return w


def build_forward(w: dict, hp: HParams, tokens: Tensor, block, out_ids: Tensor | None = None,
                  head: bool = True) -> Tensor:
    """Embeddings -> n_layer x (x + block(rms_norm(x) * attn_norm)) -> final norm -> logits.

    tokens: {n_t} I32; block(cur, il) -> {n_embd, n_t}; out_ids: {n_out} I32, the rows that
    need logits (None: all). Returns logits {n_vocab, n_out}, or without `head` the last
    block's output {n_embd, n_t} (a ubatch whose logits nobody reads)."""
    cur = name(ops.get_rows(w["token_embd"], tokens), "inp_embd")     # {n_embd, n_t}
    for il in range(hp.n_layer):
        x = name(ops.rms_norm(cur, hp.eps, w[f"{il}.attn_norm"]), "attn_norm", il)
        x = block(x, il)                                                # {n_embd, n_t}
        cur = name(ops.add(x, cur), "l_out", il)
    if not head:
        return cur
    if out_ids is not None:
        cur = name(ops.get_rows(cur, out_ids), "out_rows")               # {n_embd, n_out}
    cur = name(ops.rms_norm(cur, hp.eps, w["output_norm"]), "result_norm")
    # {n_embd, n_vocab} @ {n_embd, n_out} => {n_vocab, n_out}
    return name(ops.mul_mat(w["output"], cur), "result_output")
