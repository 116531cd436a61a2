"""What every architecture builds on: hyperparameters all models share, weight loading, and
GraphContext, the recording context an architecture's `build_graph` works in (llama.cpp's
llm_graph_context): the ubatch inputs, the memory, the graph options, and the pieces every
language model has (embeddings, the LM head).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ops
from ..errors import ModelLoadError
from ..graph import Graph
from ..options import GraphOptions
from ..tensor import F32, I32, INPUT, WEIGHT, WEIGHT_TYPES, Tensor, leaf


@dataclass(frozen=True)
class HParams:
    """What every architecture has. Each architecture module subclasses it with its own."""
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    eps: float              # RMS norm epsilon

    @staticmethod
    def read_common(f) -> dict:
        a = f.arch
        emb = f.tensors.get("token_embd.weight")
        if emb is None:
            raise ModelLoadError(f"{f.path}: missing tensor 'token_embd.weight'")
        eps_key = f"{a}.attention.layer_norm_rms_epsilon"
        if f.value(eps_key) is None and f.value(f"{a}.attention.layer_norm_epsilon") is not None:
            eps_key = f"{a}.attention.layer_norm_epsilon"   # Nemotron-H's (llama.cpp's fallback)
        return dict(arch=a, n_vocab=int(emb.shape[1]) if len(emb.shape) > 1 else 0,
                    n_embd=f.get(f"{a}.embedding_length", int),
                    n_layer=f.get(f"{a}.block_count", int),
                    eps=f.get(eps_key, float))

    def context_limit(self, n_ctx: int | None) -> int | None:
        """The positions a sequence's KV cache holds for a requested n_ctx (None: the model's
        own); None for models without attention layers (no limit)."""
        return None

    def kv_bytes_per_token(self, kv_type: int) -> int:
        """KV cache bytes per position of a sequence (0 without attention layers)."""
        return 0

    def check(self, path: str):
        """Raise ModelLoadError for sizes no model can have (before any tensor is read)."""
        for k in ("n_vocab", "n_embd", "n_layer"):
            if getattr(self, k) <= 0:
                raise ModelLoadError(f"{path}: {k} must be positive, found {getattr(self, k)}")


@dataclass(frozen=True)
class SSMHParams(HParams):
    """What Mamba-style SSM layers add (Mamba-1, Mamba-2, and the SSM layers of hybrids); a
    subclass gives state_shapes()."""
    d_conv: int
    d_inner: int
    d_state: int

    @staticmethod
    def read_ssm(f) -> dict:
        a = f.arch
        return dict(**HParams.read_common(f), d_conv=f.get(f"{a}.ssm.conv_kernel", int),
                    d_inner=f.get(f"{a}.ssm.inner_size", int),
                    d_state=f.get(f"{a}.ssm.state_size", int))

    def check(self, path: str, positive: tuple = ()):
        super().check(path)
        for k in ("d_inner", "d_state") + positive:
            if getattr(self, k) <= 0:
                raise ModelLoadError(f"{path}: {k} must be positive, found {getattr(self, k)}")
        if not 2 <= self.d_conv <= 16:
            raise ModelLoadError(f"{path}: ssm.conv_kernel {self.d_conv} not in 2..16")

    def state_shapes(self) -> tuple[tuple, tuple]:
        raise NotImplementedError

    @property
    def state_bytes_per_sequence(self) -> int:
        """F32 conv + SSM state of all layers, from the sizes alone (before any array exists)."""
        (a, b), (c, d, e) = self.state_shapes()
        return self.n_layer * 4 * (a * b + c * d * e)


def recurrent_memory(hp: SSMHParams, n_seq_max: int, n_ctx=None, kv_type=None):
    """A RecurrentState with every layer's conv and SSM state (the pure-SSM models' memory:
    no KV cache, so n_ctx and kv_type do not apply)."""
    from ..memory import RecurrentState
    conv, ssm = hp.state_shapes()
    return RecurrentState(conv, ssm, hp.n_layer, n_seq_max)


def pre_norm_stack(ctx: "GraphContext", block) -> Tensor:
    """Embeddings -> n_layer x (x + block(ctx, rms_norm(x) * attn_norm, il)) -> final norm ->
    logits: the residual skeleton of the pure-SSM models."""
    cur = ctx.embed()                                                   # {n_embd, n_t}
    for il in range(ctx.hp.n_layer):
        x = name(ops.rms_norm(cur, ctx.hp.eps, ctx.w[f"{il}.attn_norm"]), "attn_norm", il)
        cur = name(ops.add(block(ctx, x, il), cur), "l_out", il)
    return ctx.head(cur)


def name(t: Tensor, what: str, il: int | None = None) -> Tensor:
    """Name a node like llama.cpp's cb(): "blk.3.ssm_scan" or "result_norm" (and the activation
    quantization a quantized mul_mat inserted before it: "blk.3.ssm_in.act")."""
    t.name = what if il is None else f"blk.{il}.{what}"
    for s in t.src:
        if s is not None and s.op == ops.Op.QUANTIZE and not s.name:
            s.name = f"{t.name}.act"
    return t


def weight(f, key: str, ne: tuple, types=(F32,)) -> Tensor:
    """A WEIGHT leaf over the mmapped data of GGUF tensor `key`, shape-checked."""
    ttype, data = f.weight(key, ne, types)
    return leaf(ttype, ne, key, WEIGHT, data=data)


def load_common(f, hp: HParams, output_norm: str = "output_norm.weight") -> dict:
    """Embeddings, final norm (`output_norm`: its GGUF name), LM head (tied to the embeddings
    when `output` is absent), and each block's pre-norm."""
    w = {"token_embd": weight(f, "token_embd.weight", (hp.n_embd, hp.n_vocab), WEIGHT_TYPES),
         "output_norm": weight(f, output_norm, (hp.n_embd,))}
    w["output"] = (weight(f, "output.weight", (hp.n_embd, hp.n_vocab), WEIGHT_TYPES)
                   if f.has("output.weight") else w["token_embd"])
    for il in range(hp.n_layer):
        w[f"{il}.attn_norm"] = weight(f, f"blk.{il}.attn_norm.weight", (hp.n_embd,))
    return w


class GraphContext:
    """The recording context of one ubatch: `n_tokens` tokens of up to memory.n_seq_max
    sequences back to back, with logits for `n_out` rows (n_tokens: every row; 0: none).

    Inputs (filled before each run): tokens {n_tokens} I32; seq_info {3, n_seq_max} I32, one row
    (slot, first token, n tokens) per sequence, of which a run reads the first n_seqs (the plan
    sets the count, so one graph serves any number of sequences); out_ids {n_out} I32 when only
    some rows need logits."""

    def __init__(self, hp: HParams, weights: dict, memory, opts: GraphOptions, n_tokens: int,
                 n_out: int):
        self.hp, self.w, self.memory, self.opts = hp, weights, memory, opts
        self.n_tokens, self.n_out = n_tokens, n_out
        self.graph = Graph()
        self.tokens = leaf(I32, (n_tokens,), "inp_tokens", INPUT, np.zeros(n_tokens, np.int32))
        self.seq_info = leaf(I32, (3, memory.n_seq_max), "inp_seq_info", INPUT,
                             np.zeros((memory.n_seq_max, 3), np.int32))
        self.graph.inputs = {"tokens": self.tokens, "seq_info": self.seq_info}
        self._pos = None
        self.out_ids = None
        if 0 < n_out < n_tokens:
            self.out_ids = leaf(I32, (n_out,), "inp_out_ids", INPUT, np.zeros(n_out, np.int32))
            self.graph.inputs["out_ids"] = self.out_ids

    @property
    def positions(self) -> Tensor:
        """{n_tokens} I32: each token's position in its sequence (rope, the KV cache), an input
        of graphs that read it."""
        if self._pos is None:
            self._pos = leaf(I32, (self.n_tokens,), "inp_pos", INPUT, np.zeros(self.n_tokens, np.int32))
            self.graph.inputs["pos"] = self._pos
        return self._pos

    def mul_mat(self, w: Tensor, x: Tensor) -> Tensor:
        """w @ x with the graph's kernel options (integer or float paths, k blocking)."""
        return ops.mul_mat(w, x, self.opts)

    def embed(self) -> Tensor:
        """{n_embd, n_tokens}: the embeddings of the ubatch's tokens."""
        return name(ops.get_rows(self.w["token_embd"], self.tokens), "inp_embd")

    def head(self, cur: Tensor) -> Tensor:
        """Final norm and LM head on the rows that need logits: {n_embd, n_t} => {n_vocab, n_out}
        (without logits, n_out = 0, the last block's output is returned as it is)."""
        if self.n_out == 0:
            return cur
        if self.out_ids is not None:
            cur = name(ops.get_rows(cur, self.out_ids), "out_rows")               # {n_embd, n_out}
        cur = name(ops.rms_norm(cur, self.hp.eps, self.w["output_norm"]), "result_norm")
        # {n_embd, n_vocab} @ {n_embd, n_out} => {n_vocab, n_out}
        return name(self.mul_mat(self.w["output"], cur), "result_output")
